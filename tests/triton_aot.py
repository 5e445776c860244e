"""Ahead-of-time compilation of Triton kernels for a CUDA arch on a machine without a GPU (Triton ships ptxas).

Run as a subprocess by the tests: `python tests/triton_aot.py '<json>'` with TRITON_INTERPRET unset, because the
interpreter, once on in a process, replaces Triton's own @jit helpers (tl.cdiv, ...) by interpreted ones that
code generation rejects. Input: {"module", "kernel", "cases": [{"arch", "signature", "constexprs", "aligned",
"num_warps", "num_stages"}]}; output (stdout, JSON): per case {"ptx": <PTX text>, "shared": <bytes>} or
{"error": <message>}. "aligned" names the arguments a real launch would see as 16-divisible.
"""

import importlib
import json
import sys


def compile_case(fn, case: dict) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(fn.arg_names)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in case["aligned"]}
    src = ASTSource(fn=fn, signature=case["signature"], constexprs=case["constexprs"], attrs=attrs)
    options = dict(num_warps=case["num_warps"], num_stages=case["num_stages"])
    kernel = triton.compile(src, target=GPUTarget("cuda", case["arch"], 32), options=options)
    return {"ptx": kernel.asm["ptx"], "shared": kernel.metadata.shared}


def main(spec: dict) -> list[dict]:
    fn = getattr(importlib.import_module(spec["module"]), spec["kernel"])
    results = []
    for case in spec["cases"]:
        try:
            results.append(compile_case(fn, case))
        except Exception as e:  # reported per case, so one bad config does not hide the others
            results.append({"error": f"{type(e).__name__}: {e}"})
    return results


if __name__ == "__main__":
    json.dump(main(json.loads(sys.argv[1])), sys.stdout)
