"""python -m sparsekern {info,bench,demo,tune}"""

import json
import sys

USAGE = """usage: python -m sparsekern COMMAND [options]
  info    which backends this install has
  demo    prune real architectures, sparsify_ them, check and time them against dense (~2 min on 2 cores)
  tune    measure this machine's sparse-vs-dense crossovers once and cache them for format="auto"
  bench   the kernel microbenchmark (bench --help for its options)"""


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cmd, rest = (argv[0], argv[1:]) if argv else ("", [])
    if cmd == "info":
        from .backends import backends

        print(json.dumps(backends(), indent=2))
        return 0
    if cmd == "bench":
        from .bench import main as bench_main

        return bench_main(rest)
    if cmd == "demo":
        from .demo import main as demo_main

        return demo_main(rest)
    if cmd == "tune":
        from .tuning import tune

        tune(device=rest[0] if rest else "cpu")
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
