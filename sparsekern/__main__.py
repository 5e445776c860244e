"""python -m sparsekern {info,bench}"""

import json
import sys


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
    print("usage: python -m sparsekern {info,bench} [options]   (bench --help for its options)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
