"""Finding the GGUF model: a file path, a model name, or a file on the Hugging Face Hub.

Which setting wins: the ``model.path`` editor setting (the newer word: an editor can correct it
with ``workspace/didChangeConfiguration`` without a restart), then ``--model`` on the command
line, then the ``CL_LSP_MODEL`` environment variable, then the default model, the name
:data:`DEFAULT_NAME` (``codellama-7b``). ``actions.model`` takes the same values.

What a value means (a *model reference*; ``$VAR`` and a leading ``~`` are expanded first), by
the first rule that applies:

1. ``hf:OWNER/REPO/FILE.gguf``: that file of that Hub repository (FILE may be in a subfolder).
2. A path: an existing file system entry, or a value that looks like a path: it starts with
   ``/``, ``~`` or ``.``, contains a backslash or more than one ``/``, or ends in ``.gguf``.
   It is checked by :func:`check_model_file`, never downloaded.
3. ``OWNER/REPO:QUANT`` (one ``/``, then ``:``), as llama.cpp's ``-hf`` takes it: the
   repository's one GGUF file whose path has QUANT (any case) as a whole tag: after the start,
   or a character other than a letter or digit, and before ``.`` or ``-``, so ``Q4_K`` does not
   pick ``Q4_K_M`` (``mmproj`` and ``imatrix`` files are not models). No file, or several, is an
   error naming the quantizations there are. A model split in parts (``-00001-of-00003.gguf``)
   counts as one file: every part is downloaded side by side and the first is loaded
   (llama.cpp finds the others next to it).
4. ``NAME`` or ``NAME:QUANT`` (no ``/``): a short name from :data:`KNOWN_MODELS`, TheBloke's
   Code Llama GGUF conversions, with :data:`DEFAULT_QUANT` unless QUANT is given
   (``codellama-13b:Q5_K_M``). An unknown name is an error that lists the known ones.
5. Anything else (``models/x``: one ``/`` and no ``:QUANT``) is a path.

A name or Hub reference is used from the standard Hugging Face cache without any network access
when it is there, and is downloaded there once otherwise, with ``huggingface_hub`` (which honours
``HF_HOME``, ``HF_HUB_CACHE``, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_TOKEN`` ...). It writes a
process-unique ``.incomplete`` file and renames it into place only when complete, so an
interrupted download is never found as a model; the next try downloads it again. Inference-server
engines only read a vocabulary and never download: :func:`locate_vocabulary`.

Every failure a person can fix is raised as :class:`ModelError`, whose message says what is wrong
and what to do about it. This package is plain domain code: it knows nothing about LSP. Download
progress is reported through a ``progress(bytes_done, bytes_total)`` callback that the server
forwards to ``$/progress`` and the command line draws with :func:`cl_lsp.progress_bar.terminal_progress`.

``huggingface_hub`` is imported lazily: it is slow to import and only needed for the Hub.
Note that it reads its environment variables (``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_OFFLINE``,
timeouts) once, when it is first imported.
"""

from __future__ import annotations

from .files import *
from .hub import *
from .listing import *
from .names import *
