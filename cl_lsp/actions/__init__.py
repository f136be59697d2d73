"""Code actions without the protocol or the model: what to act on, what to ask, what to write.

Four actions (explain, fix, document, write tests) share one shape:

1. :func:`find_target` picks the code (:mod:`.target`).
2. :func:`instruction` writes the request for an instruct model (:mod:`.instruction`).
3. The model's answer is read (:mod:`.answers`) and turned into one :class:`Edit` in the
   language's own comment and documentation syntax (:mod:`.edits`).

Everything here is pure; offsets are ``str`` indices into the document text.
"""

from ..languages import comment_style
from .answers import extract_code, extract_documentation, extract_prose
from .edits import (
    Edit,
    comment_block,
    document_edit,
    explain_edit,
    fit_indentation,
    fix_edit,
    tests_edit,
)
from .instruction import (
    ActionKind,
    Diagnostic,
    Instruction,
    TargetTooLarge,
    instruction,
    language_name,
)
from .target import Target, find_target

__all__ = [
    "ActionKind",
    "Diagnostic",
    "Edit",
    "Instruction",
    "Target",
    "TargetTooLarge",
    "comment_block",
    "comment_style",
    "document_edit",
    "explain_edit",
    "extract_code",
    "extract_documentation",
    "extract_prose",
    "find_target",
    "fit_indentation",
    "fix_edit",
    "instruction",
    "language_name",
    "tests_edit",
]
