"""Synthetic training data from documents: grounded question/answer chats (IFT) and paraphrases (CPT).

``forgellm data synthesize`` and the web app's Datasets tab run it; see docs/data.md.
"""

from forgellm.data.synthesis.run import COUNTS, Synthesis, SynthesisOptions
from forgellm.data.synthesis.teachers import Sampling, TeacherError, open_teacher

__all__ = ["COUNTS", "Sampling", "Synthesis", "SynthesisOptions", "TeacherError", "open_teacher"]
