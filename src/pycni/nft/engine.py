"""Running nft commands: in-process through libnftables when it loads, else the ``nft`` binary.

libnftables is what the ``nft`` command itself is built on; calling it
through ctypes runs the same parser and the same atomic transaction without
a process start per call (a few milliseconds each). A fresh context is made
per call, in the calling thread, so it talks to the network namespace that
thread is in (the daemon's worker threads switch namespaces per request).
"""

from __future__ import annotations

import ctypes
import subprocess

from pycni.spec.errors import CNIError, ErrorCode

NFT = "nft"
OUTPUT_JSON = 1 << 4


def _load() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL("libnftables.so.1")
    except OSError:
        return None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
        getattr(lib, name).restype = ctypes.c_char_p
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return lib


_lib = _load()


def execute(script: str, json_output: bool = False) -> tuple[int, str, str]:
    """Run ``script``; returns (status, output, errors) as the nft command would."""
    if _lib is None:
        return _execute_binary(script, json_output)
    ctx = _lib.nft_ctx_new(0)
    if not ctx:
        raise CNIError(ErrorCode.INTERNAL, "nftables: cannot create a libnftables context")
    try:
        _lib.nft_ctx_buffer_output(ctx)
        _lib.nft_ctx_buffer_error(ctx)
        if json_output:
            _lib.nft_ctx_output_set_flags(ctx, OUTPUT_JSON)
        status = _lib.nft_run_cmd_from_buffer(ctx, script.encode())
        output = (_lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
        errors = (_lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
        return status, output, errors
    finally:
        _lib.nft_ctx_free(ctx)


def _execute_binary(script: str, json_output: bool) -> tuple[int, str, str]:
    argv = [NFT, *(["-j"] if json_output else []), "-f", "-"]
    try:
        proc = subprocess.run(argv, input=script, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise CNIError(ErrorCode.INTERNAL, "nftables: neither libnftables nor the nft command is installed") from None
    return proc.returncode, proc.stdout, proc.stderr
