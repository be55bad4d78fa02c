"""Coverage-guided fuzzing with atheris (libFuzzer) of the same parser entry points the
hypothesis tests drive: `make fuzz` installs atheris and runs each target for a while.

    python -m tests.fuzz.atheris_harness TARGET [libFuzzer flags, e.g. -max_total_time=30]
    python -m tests.fuzz.atheris_harness --list

An input that makes a parser raise anything but its documented errors (the checks inside each
entry point) is a crash: libFuzzer stops and writes the input to crash-<hash>.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

#: target -> (test module, entry point, how to call it with the fuzzer's bytes)
TARGETS: dict[str, tuple[str, str, Callable[[Callable[..., None], bytes], None]]] = {
    "rtsp": ("test_fuzz_rtsp", "_feed", lambda f, b: f(b, [])),
    "sdp": ("test_fuzz_sdp", "_parse", lambda f, b: f(b)),
    "h264": ("test_fuzz_h264", "_nals", lambda f, b: f(b)),
    "cloud": ("test_fuzz_cloud", "_decode", lambda f, b: f(b)),
    "qr": ("test_fuzz_qr", "_parse", lambda f, b: f(b.decode("utf-8", "replace"))),
    "mux": ("test_fuzz_mux", "_decode", lambda f, b: f(b, [])),
    "sofia": ("test_fuzz_sofia", "_decode", lambda f, b: f(b, [])),
    "wsdiscovery": ("test_fuzz_wsdiscovery", "_parse", lambda f, b: f(b)),
    "soap": ("test_fuzz_soap_answers", "_check", lambda f, b: f(200, b)),
    "httpauth": ("test_fuzz_httpauth", "_headers", lambda f, b: f(b.decode("latin-1"))),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TARGETS:
        print("targets: " + " ".join(TARGETS), file=sys.stderr)
        return 0 if argv[:1] == ["--list"] else 2
    import atheris  # type: ignore[import-not-found]  # installed by `make fuzz` only

    module_name, entry, call = TARGETS[argv[0]]
    with atheris.instrument_imports():
        module = importlib.import_module(f"tests.fuzz.{module_name}")
    function = getattr(module, entry)

    def one(data: bytes) -> None:
        call(function, data)

    atheris.Setup([sys.argv[0], *argv[1:]], one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
