"""edgegen.runtimes: run exported bundles on a target runtime.

With ONNX Runtime this package needs only numpy and onnxruntime (no torch):
it is what an app or a Raspberry Pi embeds. Each runtime is one session class
behind the small protocol in `session.py`; the generators are written once on
top of that protocol.
"""

from .session import RUNTIMES, Session, open_session
from .text import GenerationResult, TextGenerator

__all__ = ["RUNTIMES", "Session", "open_session", "TextGenerator", "GenerationResult"]
