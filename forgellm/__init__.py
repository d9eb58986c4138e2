"""ForgeLLM: continued pre-training and instruction fine-tuning on your own machine."""

from forgellm.errors import ForgeError, UserError

__version__ = "0.1.0"
__all__ = ["ForgeError", "UserError", "__version__"]
