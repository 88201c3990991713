"""The contracts and the edge agent import nothing from AWS or OpenCV."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = ("boto3", "botocore", "chalice", "cv2", "aws_lambda_powertools", "numpy", "PIL")


def test_contracts_and_edge_agent_import_with_aws_and_opencv_blocked() -> None:
    script = textwrap.dedent(
        f"""
        import importlib.abc, pkgutil, sys

        BLOCKED = {BLOCKED!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked import: {{name}}")
                return None

        sys.meta_path.insert(0, Block())
        import anfang.contracts
        import anfang.contracts.examples
        import anfang_edge
        for info in pkgutil.walk_packages(anfang_edge.__path__, "anfang_edge."):
            __import__(info.name)
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not leaked, leaked
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_models_import_without_cryptography() -> None:
    # The analyse function's OpenCV layer leaves no room for cryptography: the models must not need it.
    script = textwrap.dedent(
        """
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "cryptography":
                    raise ImportError(f"blocked import: {name}")
                return None

        sys.meta_path.insert(0, Block())
        from anfang.contracts import QueuedEvent, ImageAnalysis, validate_event
        from anfang.contracts.examples import example_events
        assert validate_event(example_events()["alarm"]).event_type == "alarm"
        try:
            from anfang.contracts import Signer
        except ImportError:
            print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
