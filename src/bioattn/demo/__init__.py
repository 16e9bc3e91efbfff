"""The demo: train the three systems and their baselines on the embedded data, evaluate them
side by side, and write a report page.

``run_demo()`` (``bioattn demo``) takes the micro variants of ViT, AbSViT, RVT with
self-attention, RVT with VARS-D, RS-RNN, FF-CNN and both GFNets from the model zoo
(:mod:`bioattn.zoo`) where it holds them, trains the others on the embedded cluttered-shapes
data, then scores each on clean images, the 15 corruptions, FGSM and PGD (per glimpse for the glimpse
models), how much of its attention falls on the object, and AbSViT's top-down steering on
two-object images; then fine-tunes ViT and AbSViT as segmenters and ViT and RS-RNN as
multi-label models (:mod:`.tasks`). Trained checkpoints are cached
(``$BIOATTN_CACHE/demo/<settings>``), so a second run only evaluates; ``retrain=True`` trains
every model anew, zoo weights unused. ``quick=True`` runs the same pipeline on a tiny budget (for tests).

The report directory holds ``index.html`` (a static page: the table, the robustness plots and
an attention gallery), ``report.md`` and ``results.json``.

The modules: :mod:`.settings` (the models and budgets), :mod:`.training` (cached training
runs), :mod:`.run` (the pipeline), :mod:`.gallery` (where each model looks), :mod:`.tasks` (the
segmentation and multi-label parts), :mod:`.findings` (the report's sentences) and :mod:`.page`
(``index.html`` and the Markdown tables). The object-mask score of the attention maps is
:func:`bioattn.evaluate.object_attention.mask_attention_scores`.
"""

from .findings import domain_findings, findings, task_findings
from .page import HEATMAP
from .run import run_demo
from .settings import DEMO_MODELS, DOMAIN_MODELS, QUICK, QUICK_TASKS, DemoSettings, TaskDemoSettings

__all__ = [
    "run_demo", "DEMO_MODELS", "DOMAIN_MODELS", "DemoSettings", "QUICK", "TaskDemoSettings", "QUICK_TASKS",
    "HEATMAP", "findings", "domain_findings", "task_findings",
]
