"""Every argument and data error of the array API, worded once. The backends (CPU, CUDA, CUDA
emulation) report *where* something went wrong (a flat index, a count); the wrappers raise the
exceptions built here, so a message reads the same whichever device ran the kernel."""
from __future__ import annotations


def where(flat_index: int, length: int) -> str:
    """``row r, position t`` of a flat index into a (B, L) array."""
    return f"row {flat_index // length}, position {flat_index % length}" if length else f"row {flat_index}"


def outside_vocabulary(value: int, flat_index: int, length: int, vocab_size: int) -> ValueError:
    return ValueError(f"tokens: value {value} at {where(flat_index, length)} is outside the vocabulary "
                      f"[0, {vocab_size})")


def zero_probability(value: int, flat_index: int, length: int) -> ValueError:
    return ValueError(f"token {value} at {where(flat_index, length)} has zero probability under the belief before "
                      "it: the sequence is impossible under this process (pass on_zero='nan' to get NaN beliefs and "
                      "log_prob=-inf instead)")


def no_positive_token(flat_index: int, length: int) -> ValueError:
    return ValueError(f"sampling reached a belief that gives no token positive probability at "
                      f"{where(flat_index, length)}: the GHMM does not define a valid process from this initial belief")


def not_a_state(token: int, prob: float, flat_index: int, length: int) -> ValueError:
    return ValueError(f"initial is not a state of this GHMM: the belief it leads to before {where(flat_index, length)} "
                      f"gives token {token} the negative probability {prob:.6g}")


def not_a_state_at(proc, initial, tokens, flat_index: int, length: int) -> ValueError | None:
    """``not_a_state`` when the belief before ``flat_index`` of the (B, L) ``tokens`` (numpy or
    torch, any device) gives some token a negative probability; ``None`` when it does not (the
    failure was an impossible token, or a belief with no positive token)."""
    if not proc.is_generalized:
        return None
    row, t = divmod(flat_index, length)
    prefix = tokens[row, :t]
    prefix = prefix.cpu().numpy() if hasattr(prefix, "cpu") else prefix
    found = proc.most_negative_token(initial, prefix)
    return None if found is None else not_a_state(found[0], found[1], flat_index, length)


def negative_for_hidden_states() -> ValueError:
    return ValueError("T and initial must be non-negative for hidden-state sampling")


def on_zero_choice(value, choices) -> ValueError:
    return ValueError(f"on_zero must be one of {tuple(choices)}, got {value!r}")


def ghmm_has_no_states() -> ValueError:
    return ValueError("return_states: a GHMM has no hidden states (it is sampled through its beliefs)")


def rng_rows_exhausted() -> ValueError:
    return ValueError("row_offset + batch must be < 2**64")


def rng_length_exhausted() -> ValueError:
    return ValueError("length must be < 2**34 (the RNG counter's range)")


def integer_tokens(dtype) -> TypeError:
    return TypeError(f"tokens must be an integer array, got dtype {dtype}")


def token_shape(shape) -> ValueError:
    return ValueError(f"tokens must have shape (B, L) or (L,), got shape {tuple(shape)}")


def too_many_states(num_states: int, limit: int) -> ValueError:
    return ValueError(f"the CUDA kernels take processes with at most {limit} states, this one has {num_states}; "
                      "use CPU arrays for it")


def level_too_large(parents: int) -> ValueError:
    return ValueError(f"msp level too large ({parents} parents): use compmech.msp_level_chunks")


def out_shape(want, got) -> ValueError:
    return ValueError(f"out must have shape {tuple(want)}, got {tuple(got)}")


def out_dtype(dtype) -> TypeError:
    return TypeError(f"out must be float32 or float64, got {dtype}")


def out_overlaps_tokens() -> ValueError:
    return ValueError("out must not overlap tokens")


def out_layout(what: str) -> ValueError:
    return ValueError(f"out must be {what}")


def immutable_out(obj) -> TypeError:
    return TypeError(f"out cannot be a {type(obj).__module__.split('.')[0]} array: those arrays are immutable "
                     "(pass a numpy array, a torch tensor or a CuPy array, or no out)")


def other_device(name: str, got, want) -> ValueError:
    return ValueError(f"{name} is on {got}, the tokens on {want}: put every array of the call on one device")


def cpu_only(name: str, device) -> ValueError:
    return ValueError(f"{name} is on device {device}; compmech runs on CPU arrays and CUDA tensors "
                      "(move it with .cpu(), or put every tensor of the call on the same CUDA device)")


def no_cuda_kernels() -> RuntimeError:
    return RuntimeError("this build of compmech has no CUDA kernels (compmech.build_info()['cuda'] is False): it was "
                        "built without a CUDA toolkit or with COMPMECH_CUDA=OFF; reinstall with nvcc on the PATH")


def no_cuda_gpu(device) -> RuntimeError:
    return RuntimeError(f"device {str(device)!r} requested, but torch sees no CUDA GPU "
                        "(torch.cuda.is_available() is False)")


def no_such_gpu(index: int, count: int) -> ValueError:
    return ValueError(f"device cuda:{index} does not exist ({count} CUDA device(s) visible)")


def not_a_cuda_device(device) -> ValueError:
    return ValueError(f"expected a CUDA device, got {device}")


def unsupported_array(obj) -> TypeError:
    return TypeError(f"expected a numpy array, a torch tensor or an array with __dlpack__ / "
                     f"__cuda_array_interface__, got {type(obj).__module__}.{type(obj).__name__}")


def old_torch(dtype_name: str, version: str) -> RuntimeError:
    return RuntimeError(f"this torch ({version}) has no {dtype_name} tensors; upgrade torch to >= 2.3")
