"""The demo's models and budgets: which models it trains, how long, on which data, and how many
images each evaluation sees; the quick budgets for tests."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..data.embedded import generator_digest

# where a demo model's weights come from: the committed zoo, or a training run of the demo
FROM_ZOO = "zoo"
FROM_DEMO = "demo"


@dataclass(frozen=True)
class TaskDemoSettings:
    """Budget of the segmentation and multi-label parts of the demo."""

    seg_data: str = "embedded:seg,train=2000,val=200,test=300"
    multi_data: str = "embedded:multi,train=2000,val=200,test=300"
    epochs: int = 3
    batch_size: int = 32
    lr: float = 3e-3
    eval_images: int = 300
    corruption_images: int = 100
    corruptions: tuple[str, ...] = ("gaussian_noise", "motion_blur", "fog", "jpeg_compression")
    severities: tuple[int, ...] = (3,)
    glimpses: int = 8
    gallery_images: int = 3

    @property
    def key(self) -> str:
        """Identifies the fine-tuned checkpoints: the settings they were trained with."""
        part = {k: getattr(self, k) for k in ("seg_data", "multi_data", "epochs", "batch_size", "lr")}
        return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:12]


QUICK_TASKS = TaskDemoSettings(
    seg_data="embedded:seg,train=64,val=16,test=16", multi_data="embedded:multi,train=64,val=16,test=16",
    epochs=1, batch_size=32, eval_images=16, corruption_images=4, corruptions=("gaussian_noise",),
    glimpses=4, gallery_images=1,
)


DEMO_MODELS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    # the ViT pair converged on equal terms (convolutional stems; docs/training.md)
    ("ViT", "vit_micro_convstem_64", {}),
    ("AbSViT", "absvit_micro_convstem_64", {}),
    ("RVT", "rvt_micro", {}),
    ("RVT VARS-D", "rvt_micro", {"attention": "vars_d"}),
    ("RS-RNN", "rsrnn_micro", {"train_glimpses": [2, 16]}),
    ("FF-CNN", "ffcnn_micro", {}),
    ("GFNet", "gfnet_micro", {}),
    ("GFNet VARS-S", "gfnet_micro", {"mixer": "vars_s"}),
)
# The models of the domain-generalisation table: each is fine-tuned from its demo checkpoint on
# three of the embedded data's four styles and tested on the fourth.
DOMAIN_MODELS: tuple[str, ...] = ("ViT", "AbSViT", "RVT", "RVT VARS-D", "GFNet", "GFNet VARS-S")
# The model the corruption errors of the models after it are measured against (relative mCE).
CORRUPTION_BASELINE = "ViT"


@dataclass(frozen=True)
class DemoSettings:
    """Budget of one demo run (its training time per model and the number of images evaluated)."""

    data: str = "embedded:train=8000,val=500,test=1000"
    # steering: the protocol (prior scale, map threshold) is chosen on the validation pairs, then
    # the test pairs are scored
    pair_data: str = "embedded:pair,train=64,val=200,test=300"
    epochs: int = 3
    batch_size: int = 64
    base_lr: float = 4e-3
    eval_images: int = 1000
    corruption_images: int = 200
    severities: tuple[int, ...] = (3,)
    corruptions: tuple[str, ...] | None = None
    attack_images: int = 200
    glimpses: int = 8
    attack_readout: int = 4
    attention_images: int = 300
    steering_images: int = 300
    gallery_images: int = 4
    domain_data: str = "embedded:train=400,val=100,test=300"
    domain_epochs: int = 1
    tasks: TaskDemoSettings = TaskDemoSettings()
    seed: int = 0
    # evaluate the zoo's weights (bioattn.zoo) of every demo model that has a built entry instead
    # of training it on ``data`` for ``epochs``
    use_zoo: bool = True
    # the model trained from scratch to show the trainer when the others come from the zoo
    trainer_model: tuple[str, str, dict[str, Any]] = ("RVT", "rvt_micro", {})

    @property
    def key(self) -> str:
        """Identifies the trained checkpoints: the training settings and the data generator's
        version (checkpoints trained on other images are not reused)."""

        train_part = {k: getattr(self, k) for k in ("data", "epochs", "batch_size", "base_lr", "seed")}
        train_part["data_generator"] = generator_digest()
        return hashlib.sha256(json.dumps(train_part, sort_keys=True).encode()).hexdigest()[:12]


QUICK = DemoSettings(
    data="embedded:train=128,val=32,test=32",
    pair_data="embedded:pair,train=16,val=16,test=8",
    epochs=1, batch_size=32, eval_images=32, corruption_images=8,
    corruptions=("gaussian_noise", "motion_blur", "contrast", "jpeg_compression"),
    attack_images=8, glimpses=4, attack_readout=2, attention_images=8, steering_images=8,
    gallery_images=1, domain_data="embedded:train=16,val=8,test=8", tasks=QUICK_TASKS, use_zoo=False,
)
