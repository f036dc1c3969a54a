// Breadth-first mixed-state graph with merging. Children of a block of frontier states are
// computed in parallel (the shared belief_step body); deduplication is a sequential pass in
// (parent, token) order, so state numbering never depends on the thread count.
//
// Merging: a child belief is merged into the earliest-found state (smallest index) within tol
// (max-norm). A belief b is looked up in a hash grid with cell size c = 64 tol (key_i = round(b_i / c)).
// Any stored belief within tol (max-norm) of b lies in b's cell or, along the coordinates where
// b is within tol of a cell boundary, in the neighbouring cell; all those cells are probed, so
// lookups are exact with respect to the max-norm test.
#include "msp_graph.hpp"

#include <algorithm>
#include <cmath>

#include "compmech/kernels.hpp"
#include "parallel.hpp"

namespace compmech {
namespace {

constexpr double kCellPerTol = 64.0;
constexpr int kMaxProbeBits = 16;  // beyond 2^16 neighbour cells: linear scan (never seen in practice)

inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Open-addressing map from a 64-bit cell hash to the newest state filed under it (linear
// probing, power-of-two capacity, load <= 1/2). Much lighter than std::unordered_map here.
class CellMap {
 public:
  CellMap() { rehash(1 << 10); }
  int64_t get(uint64_t h) const {
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      if (vals_[i] < 0) return -1;
      if (keys_[i] == h) return vals_[i];
    }
  }
  // Sets map[h] = v and returns the previous value (-1 if none).
  int64_t put(uint64_t h, int64_t v) {
    if (2 * (size_ + 1) > keys_.size()) rehash(keys_.size() * 2);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      if (vals_[i] < 0) {
        keys_[i] = h;
        vals_[i] = v;
        ++size_;
        return -1;
      }
      if (keys_[i] == h) {
        const int64_t old = vals_[i];
        vals_[i] = v;
        return old;
      }
    }
  }

 private:
  void rehash(size_t cap) {
    std::vector<uint64_t> k(cap);
    std::vector<int64_t> v(cap, -1);
    const size_t m = cap - 1;
    for (size_t j = 0; j < keys_.size(); ++j) {
      if (vals_[j] < 0) continue;
      size_t i = keys_[j] & m;
      while (v[i] >= 0) i = (i + 1) & m;
      k[i] = keys_[j];
      v[i] = vals_[j];
    }
    keys_.swap(k);
    vals_.swap(v);
    mask_ = m;
  }
  std::vector<uint64_t> keys_;
  std::vector<int64_t> vals_;
  size_t mask_ = 0, size_ = 0;
};

class BeliefIndex {
 public:
  BeliefIndex(int S, double tol) : S_(S), tol_(tol), cell_(kCellPerTol * tol) {}

  // Index of a stored belief within tol of b, or -1.
  int64_t find(const double* b, const std::vector<double>& store) {
    keys_.resize(S_);
    near_.clear();
    const double margin = 0.5 - tol_ / cell_;
    for (int i = 0; i < S_; ++i) {
      double q = b[i] / cell_;
      q = std::max(-4e18, std::min(4e18, q));
      const double r = std::nearbyint(q);
      keys_[i] = static_cast<int64_t>(r);
      const double frac = q - r;
      if (frac > margin) near_.push_back({i, +1});
      else if (frac < -margin) near_.push_back({i, -1});
    }
    if (static_cast<int>(near_.size()) > kMaxProbeBits) return linear_scan(b, store);
    // Probe every candidate cell and keep the smallest matching id, so the result is the
    // earliest-found state within tol whichever cell it was filed under.
    const uint32_t combos = 1u << near_.size();
    int64_t best = -1;
    for (uint32_t m = 0; m < combos; ++m) {
      for (size_t k = 0; k < near_.size(); ++k)
        if (m >> k & 1u) keys_[near_[k].first] += near_[k].second;
      const int64_t hit = probe(hash(keys_.data()), b, store);
      for (size_t k = 0; k < near_.size(); ++k)
        if (m >> k & 1u) keys_[near_[k].first] -= near_[k].second;
      if (hit >= 0 && (best < 0 || hit < best)) best = hit;
    }
    return best;
  }

  void insert(int64_t id, const double* b) {
    keys_.resize(S_);
    for (int i = 0; i < S_; ++i) {
      double q = std::max(-4e18, std::min(4e18, b[i] / cell_));
      keys_[i] = static_cast<int64_t>(std::nearbyint(q));
    }
    const uint64_t h = hash(keys_.data());
    next_.push_back(head_.put(h, id));
  }

 private:
  uint64_t hash(const int64_t* k) const {
    uint64_t h = 0x51ed270b27e3a1c5ULL;
    for (int i = 0; i < S_; ++i) h = mix64(h ^ static_cast<uint64_t>(k[i]));
    return h;
  }
  bool close(const double* a, const double* b) const {
    for (int i = 0; i < S_; ++i)
      if (!(std::fabs(a[i] - b[i]) <= tol_)) return false;
    return true;
  }
  int64_t probe(uint64_t h, const double* b, const std::vector<double>& store) const {
    int64_t best = -1;  // chains run from the newest id to the oldest: keep the last match
    for (int64_t id = head_.get(h); id >= 0; id = next_[id])
      if (close(b, store.data() + id * S_)) best = id;
    return best;
  }
  int64_t linear_scan(const double* b, const std::vector<double>& store) const {
    const int64_t K = static_cast<int64_t>(store.size()) / S_;
    for (int64_t id = 0; id < K; ++id)
      if (close(b, store.data() + id * S_)) return id;
    return -1;
  }

  int S_;
  double tol_, cell_;
  CellMap head_;
  std::vector<int64_t> next_;
  std::vector<int64_t> keys_;
  std::vector<std::pair<int, int>> near_;
};

}  // namespace

MSPGraph msp_graph_cpu(const ProcessView& p, const double* init, int64_t max_depth, int64_t max_states, double tol) {
  const int S = p.S, V = p.V;
  MSPGraph g;
  BeliefIndex index(S, tol);
  const size_t guess = static_cast<size_t>(std::min<int64_t>(max_states, int64_t(1) << 20));
  g.beliefs.reserve(guess * S);
  g.depth.reserve(guess);
  g.expanded.reserve(guess);
  g.beliefs.assign(init, init + S);
  g.depth.push_back(0);
  g.expanded.push_back(0);
  index.insert(0, init);

  // Frontier states whose children are computed at once: up to 2^14, and at most ~2^22 child
  // belief entries (32 MiB) however large V and S are.
  const int64_t kBlock = std::max<int64_t>(1, std::min<int64_t>(1 << 14, (int64_t(1) << 22) / (int64_t(V) * S)));
  std::vector<double> child;           // (block, V, S) normalised children
  std::vector<double> cprob;           // (block, V) P(x | parent); <= zero_tol marks impossible
  std::vector<int64_t> match(V);
  std::vector<int> fresh;
  int64_t lo = 0;
  bool stop = false;
  while (!stop && lo < static_cast<int64_t>(g.depth.size())) {
    const int64_t hi = static_cast<int64_t>(g.depth.size());  // current level is [lo, hi)
    const int32_t d = g.depth[lo];
    if (max_depth >= 0 && d >= max_depth) break;
    for (int64_t b0 = lo; b0 < hi && !stop; b0 += kBlock) {
      poll_interrupt();  // the dedup below runs serially on the calling thread
      const int64_t n = std::min(kBlock, hi - b0);
      child.resize(static_cast<size_t>(n * V * S));
      cprob.resize(static_cast<size_t>(n * V));
      const double* store = g.beliefs.data();
      parallel_for(n, 256, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const double* eta = store + (b0 + i) * S;
          for (int x = 0; x < V; ++x) {
            double* out = child.data() + (i * V + x) * S;
            const double cond = belief_step<0, double>(eta, p.T + static_cast<int64_t>(x) * S * S, p.w, out, S);
            cprob[i * V + x] = cond;
            if (cond > p.zero_tol) {
              const double inv = safe_inverse(cond, out, S);
              for (int j = 0; j < S; ++j) out[j] *= inv;
            }
          }
        }
      });
      for (int64_t i = 0; i < n; ++i) {
        const int64_t k = b0 + i;
        // Resolve every possible child first: the state is expanded only if all fit.
        fresh.clear();
        int64_t next_id = static_cast<int64_t>(g.depth.size());
        for (int x = 0; x < V; ++x) {
          match[x] = -2;
          if (!(cprob[i * V + x] > p.zero_tol)) continue;
          const double* c = child.data() + (i * V + x) * S;
          match[x] = index.find(c, g.beliefs);
          if (match[x] < 0) {  // new, unless equal to an earlier new sibling
            for (int y : fresh) {
              const double* o = child.data() + (i * V + y) * S;
              bool same = true;
              for (int j = 0; j < S && same; ++j) same = std::fabs(c[j] - o[j]) <= tol;
              if (same) {
                match[x] = -3 - y;
                break;
              }
            }
            if (match[x] == -1) fresh.push_back(x);
          }
        }
        if (next_id + static_cast<int64_t>(fresh.size()) > max_states) {
          g.hit_max_states = true;
          stop = true;
          break;
        }
        for (int x : fresh) {
          const double* c = child.data() + (i * V + x) * S;
          g.beliefs.insert(g.beliefs.end(), c, c + S);
          g.depth.push_back(d + 1);
          g.expanded.push_back(0);
          index.insert(next_id, c);
          match[x] = next_id++;
        }
        for (int x = 0; x < V; ++x) {
          if (match[x] == -2) continue;
          int64_t to = match[x];
          if (to <= -3) to = match[-3 - to];
          const double* c = child.data() + (i * V + x) * S;
          const double* r = g.beliefs.data() + to * S;
          double dmax = 0.0;
          for (int j = 0; j < S; ++j) dmax = std::max(dmax, std::fabs(c[j] - r[j]));
          g.dist.push_back(dmax);
          g.src.push_back(static_cast<int32_t>(k));
          g.dst.push_back(static_cast<int32_t>(to));
          g.token.push_back(x);
          g.prob.push_back(cprob[i * V + x]);
        }
        g.expanded[k] = 1;
      }
    }
    lo = hi;
  }
  // Merge statistics: edges whose target existed before (every edge minus the states it created).
  g.merges = static_cast<int64_t>(g.src.size()) - (static_cast<int64_t>(g.depth.size()) - 1);
  return g;
}

}  // namespace compmech
