"""Ahead-of-time compilation of Triton kernels for a CUDA arch on a machine without a GPU (Triton ships ptxas).

Run as a subprocess by the tests (compile_in_subprocess): `python tests/triton_aot.py '<json>'` with
TRITON_INTERPRET unset, because the
interpreter, once on in a process, replaces Triton's own @jit helpers (tl.cdiv, ...) by interpreted ones that
code generation rejects. Input: {"module", "kernel", "cases": [{"arch", "signature", "constexprs", "aligned",
"num_warps", "num_stages"}]}; output (stdout, JSON): per case {"ptx": <PTX text>, "shared": <bytes>} or
{"error": <message>}. "aligned" names the arguments a real launch would see as 16-divisible.
"""

import importlib
import json
import os
import sys


def source(fn, case: dict):
    """The kernel specialised as `case` says, in this Triton's ASTSource form."""
    import inspect

    from triton.compiler import ASTSource

    names = list(fn.arg_names)
    if "constexprs" in inspect.signature(ASTSource).parameters:  # Triton >= 3.3
        attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in case["aligned"]}
        return ASTSource(fn=fn, signature=case["signature"], constexprs=case["constexprs"], attrs=attrs)
    # Triton 3.2: the signature lists only runtime arguments; an argument specialised to a value (a unit stride)
    # stays in it and is also a constant with the "equal to 1" attribute, as the launcher would make it.
    from triton.backends.compiler import AttrsDescriptor

    declared = {names[i] for i in fn.constexprs}
    signature = {n: "i32" if case["signature"][n] == "constexpr" else case["signature"][n] for n in names
                 if n not in declared}
    hints = {names.index(n): 16 for n in case["aligned"]}
    hints.update({names.index(n): v for n, v in case["constexprs"].items() if n not in declared})
    return ASTSource(fn, signature, constants=dict(case["constexprs"]), attrs=AttrsDescriptor.from_hints(hints))


def compile_case(fn, case: dict) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget

    src = source(fn, case)
    options = dict(num_warps=case["num_warps"], num_stages=case["num_stages"])
    kernel = triton.compile(src, target=GPUTarget("cuda", case["arch"], 32), options=options)
    return {"ptx": kernel.asm["ptx"], "shared": kernel.metadata.shared}


def main(spec: dict) -> list[dict]:
    # The kernels of this checkout, also where it is not installed (an extension built in place).
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    fn = getattr(importlib.import_module(spec["module"]), spec["kernel"])
    results = []
    for case in spec["cases"]:
        try:
            results.append(compile_case(fn, case))
        except Exception as e:  # reported per case, so one bad config does not hide the others
            results.append({"error": f"{type(e).__name__}: {e}"})
    return results


def launch_case(kernel, arch: int, dtype: str, constexprs: dict, pointers: dict, num_warps: int,
                unaligned: tuple = ()) -> dict:
    """The case of `kernel` (a @triton.jit function) a real launch on 16-aligned shapes compiles: the given
    constexprs (unit inner strides among them), pointers typed by `pointers` or else as `dtype` ("fp16", ...),
    other arguments i32 and 16-divisible except those named in `unaligned`."""
    import inspect

    names = list(inspect.signature(kernel.fn).parameters)  # .fn: the Python function, jit or interpreted
    signature = {}
    for n in names:
        if n in constexprs:
            signature[n] = "constexpr"
        elif n.endswith("_ptr"):
            signature[n] = pointers.get(n, "*" + dtype)
        else:
            signature[n] = "i32"
    aligned = [n for n in names if signature[n] != "constexpr" and n not in unaligned]
    return dict(arch=arch, signature=signature, constexprs=constexprs, aligned=aligned, num_warps=num_warps,
                num_stages=3)


def compile_in_subprocess(module: str, kernel: str, cases: list[dict]) -> list[dict]:
    """main() run by a fresh interpreter without TRITON_INTERPRET; for the tests' module-scoped fixtures."""
    import subprocess

    spec = dict(module=module, kernel=kernel, cases=cases)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, os.path.abspath(__file__), json.dumps(spec)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


if __name__ == "__main__":
    json.dump(main(json.loads(sys.argv[1])), sys.stdout)
