"""edgegen: distill, quantize, export and validate generative models for edge devices.

Importing the package is cheap and torch-free: `edgegen.runtimes` builds on it
inside apps that ship only numpy and onnxruntime.
"""

__version__ = "0.1.0"


class EdgegenError(Exception):
    """A problem with the user's input, said in one clear sentence.

    The CLI prints it without a traceback and exits non-zero.
    """
