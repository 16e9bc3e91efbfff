"""The sources' claims, declared as data before anything is measured.

Each :class:`Claim` names, up front: its source (AbSViT, VARS, RS-RNN) and statement; the
*primary metric* that decides it (one of :data:`METRICS`); the zoo entries compared (the
``system`` against the ``baseline`` on the same images, or one model against a reference level
of its own, such as chance or an earlier glimpse); the expected direction; and, for a claim of
no change, the *equivalence margin* within which a difference counts as none. The other metrics
listed in ``others`` are shown beside the primary one but never decide the verdict.

Directions: :data:`GREATER` (the system's metric is higher), :data:`LESS` (lower, e.g. mCE),
:data:`EQUIVALENT` (the difference lies within ``margin``) and :data:`AT_MOST` (the difference
stays below ``margin``: e.g. a baseline's accuracy under attack does not recover).

A leaf module (the zoo's table and the error type only): the claims can be listed and checked without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BioattnError
from ..zoo import STYLES

GREATER, LESS, EQUIVALENT, AT_MOST = "greater", "less", "equivalent", "at most"
DIRECTIONS = (GREATER, LESS, EQUIVALENT, AT_MOST)

# the attack budget the claims are judged at: the official FGSM and PGD eps (docs/evaluation.md)
OFFICIAL_EPS = 1 / 255

# every metric a claim can name, with what it measures (its unit in brackets)
METRICS: dict[str, str] = {
    "clean_top1": "top-1 on the clean test images (points)",
    "corrupted_top1": "top-1 averaged over the 15 corruptions at 5 severities (points)",
    "mce": "mCE: the corruption errors summed over severities, divided by the baseline's, averaged over "
           "the corruptions, less 100 (points; below 0 is more robust)",
    "corrupted_top1_both_clean": "top-1 under the corruptions on the images both models get right when "
                                 "clean (points)",
    "fgsm_top1": "top-1 under FGSM at eps 1/255 (points)",
    "pgd_top1": "top-1 under PGD at eps 1/255 (points)",
    "pgd_top1_both_clean": "top-1 under PGD at eps 1/255 on the images both models get right when clean (points)",
    "attention_auc": "AUC-Judd of the attention map against the object mask (AUC)",
    "attention_share": "share of the attention map on the object (points)",
    "steering_shift": "rise of an object's share of the top-down map when its class is the prior rather "
                      "than the other object's, per image (points)",
    "steering_win": "share of the two prompts of an image where the prompted object holds more of the map "
                    "than the other (points, chance 50)",
    "held_out_top1": "top-1 on the style held out of training, over the four styles (points)",
    "miou": "mIoU over the 11 classes from the intersections and unions summed over the images (points)",
    "glimpse_change": "clean top-1 at the last glimpse less top-1 at the trained number of glimpses (points)",
    "pgd_recovery": "top-1 under PGD aimed at the attack glimpse: at the last glimpse less at the attacked "
                    "one (points)",
    "fixations_on_object": "share of fixations 2 to the last on the object less the object's area (the "
                           "share of random points), per image (points)",
    "small_object_fixations": "share of fixations 2 to the last on a small object less the small objects' "
                              "area, per image with a small object (points)",
}

# the metrics that compare a model with a reference of its own (chance, another glimpse):
# their claims name no baseline
WITHIN_MODEL = ("steering_shift", "steering_win", "glimpse_change", "pgd_recovery", "fixations_on_object",
                "small_object_fixations")

# the equivalence margins, in points: a change of clean top-1 within 2 points counts as none
# (a tenth of the gap between the zoo's weakest and strongest classifiers), and a baseline's
# top-1 under attack "does not recover" while its rise stays below 2 points
GLIMPSE_MARGIN = 2.0
RECOVERY_MARGIN = 2.0


@dataclass(frozen=True)
class Claim:
    """One claim of a source, declared before it is measured (see the module's description)."""

    id: str
    source: str
    statement: str
    source_figure: str
    metric: str
    system: tuple[str, ...]
    baseline: tuple[str, ...] = ()
    direction: str = GREATER
    margin: float | None = None
    others: tuple[str, ...] = ()
    missing: str = ""  # why the zoo cannot measure the claim at all

    @property
    def entries(self) -> tuple[str, ...]:
        return self.system + self.baseline


ROBUSTNESS_OTHERS = ("corrupted_top1_both_clean", "clean_top1")
ATTACK_OTHERS = ("pgd_top1_both_clean", "fgsm_top1", "clean_top1")


def claims(attack_readout: int = 4) -> list[Claim]:
    """Every claim of the sources, in the order of the results page; ``attack_readout`` is the
    glimpse the attacks on the glimpse models aim at."""
    k = attack_readout
    absvit_c = "ImageNet-C mCE (lower is better) ViT -> AbSViT: Ti 71.1 -> 66.7, S 54.6 -> 51.6, B 49.3 -> 48.3"
    vars_rob = "VARS improves robustness (ImageNet-C, -R, -Sketch, -A, PGD) of each backbone"
    # the ViT family on equal terms: each with the convolutional stem (the zoo's 8x8-patch ViTs
    # stop while still learning, 75-81% top-1)
    vit = ("vit_micro_convstem_64",)
    absvit = ("absvit_micro_convstem_64",)
    rows = [
        Claim("absvit-corruptions", "AbSViT", "AbSViT is more robust than ViT to corruptions", absvit_c, "mce",
              absvit, vit, LESS, others=("corrupted_top1",) + ROBUSTNESS_OTHERS),
        Claim("absvit-pgd", "AbSViT", "AbSViT is more robust than ViT to adversarial attack (PGD)",
              "more robust to adversarial attack", "pgd_top1", absvit, vit, others=ATTACK_OTHERS),
        Claim("absvit-steering", "AbSViT", "AbSViT's attention is steered by a class prior",
              "top-down attention follows the prompted class (official demo)", "steering_shift", absvit,
              others=("steering_win",)),
        Claim("absvit-attention", "AbSViT", "AbSViT's attention is on the object more than ViT's",
              "top-down attention focuses on the object", "attention_auc", absvit, vit,
              others=("attention_share",)),
    ]
    for key, system, base, where in (
            ("rvt-vars-d", "rvt_micro_vars_d", "rvt_micro", "RVT VARS-D vs self-attention"),
            ("rvt-vars-s", "rvt_micro_vars_s", "rvt_micro", "RVT VARS-S vs self-attention"),
            ("rvt-vars-sd", "rvt_micro_vars_sd", "rvt_micro", "RVT VARS-SD vs self-attention"),
            ("deit-vars-d", "deit_micro_convstem_64_vars_d", "vit_micro_convstem_64", "DeiT-style ViT VARS-D vs ViT"),
            ("gfnet-vars-s", "gfnet_micro_vars_s", "gfnet_micro", "GFNet VARS-S vs global filter")):
        rows.append(Claim(f"vars-corruptions-{key}", "VARS", f"VARS is more robust to corruptions: {where}",
                          vars_rob, "corrupted_top1", (system,), (base,), others=("mce",) + ROBUSTNESS_OTHERS))
        rows.append(Claim(f"vars-pgd-{key}", "VARS", f"VARS is more robust to PGD: {where}", vars_rob, "pgd_top1",
                          (system,), (base,), others=ATTACK_OTHERS))
    fixations_human = "VARS-D maps agree better with human fixations (MIT1003) than self-attention's"
    rows += [
        Claim("vars-attention-rvt", "VARS", "VARS-D's attention is closer to the object than self-attention's (RVT)",
              fixations_human, "attention_auc", ("rvt_micro_vars_d",), ("rvt_micro",), others=("attention_share",)),
        Claim("vars-attention-deit", "VARS",
              "VARS-D's attention is closer to the object than self-attention's (DeiT-style ViT)", fixations_human,
              "attention_auc", ("deit_micro_convstem_64_vars_d",), vit, others=("attention_share",)),
        Claim("vars-styles", "VARS",
              "VARS generalises better across domains: RVT VARS-D vs self-attention, leave one style out",
              "better PACS domain generalisation", "held_out_top1",
              tuple(f"rvt_micro_vars_d_without_{s}" for s in STYLES), tuple(f"rvt_micro_without_{s}" for s in STYLES)),
        Claim("vars-segmentation", "VARS", "VARS segments better: UperNet on RVT VARS-D vs self-attention",
              "better PASCAL VOC segmentation", "miou", ("upernet_rvt_micro_vars_d",), ("upernet_rvt_micro",)),
        Claim("absvit-segmentation", "AbSViT", "AbSViT segments better than ViT (UperNet)",
              "mIoU ViT-B -> AbSViT-B: VOC 80.1 -> 81.3, Cityscapes 75.3 -> 76.8, ADE20K 45.2 -> 47.2", "miou",
              ("upernet_absvit_micro_convstem_64",), ("upernet_vit_micro_convstem_64",)),
        Claim("rsrnn-looks-longer", "RS-RNN",
              "RS-RNN: clean top-1 does not change when it looks longer than it was trained to",
              "trained with 4-8 glimpses, tested up to 16", "glimpse_change", ("rsrnn_micro",),
              direction=EQUIVALENT, margin=GLIMPSE_MARGIN),
        Claim("rsrnn-pgd", "RS-RNN", f"RS-RNN is more robust to PGD than FF-CNN (both at glimpse {k})",
              "RS-RNN is more robust to adversarial noise than the feedforward CNN", "pgd_top1", ("rsrnn_micro",),
              ("ffcnn_micro",), others=ATTACK_OTHERS),
        Claim("rsrnn-pgd-retina", "RS-RNN",
              f"RS-RNN is more robust to PGD than the retina alone (Retina-CNN: FF-CNN on the retinal image; "
              f"glimpse {k})", "control: separates recurrence and eye movements from the retina's blur",
              "pgd_top1", ("rsrnn_micro",), ("retina_cnn_micro",), others=ATTACK_OTHERS),
        Claim("rsrnn-recovers", "RS-RNN", f"RS-RNN: top-1 under PGD aimed at glimpse {k} recovers with more glimpses",
              "accuracy under attack grows with more glimpses", "pgd_recovery", ("rsrnn_micro",)),
    ]
    for entry, label in (("crop_s_micro", "Crop-S"), ("crop_d_micro", "Crop-D"),
                         ("retina_gru_micro", "Retina-GRU"), ("s3ta_micro", "S3TA")):
        rows.append(Claim(f"baseline-no-recovery-{entry.removesuffix('_micro').replace('_', '-')}", "RS-RNN",
                          f"{label} (baseline): top-1 under PGD aimed at glimpse {k} does not recover",
                          "the baselines' accuracy under attack does not recover", "pgd_recovery", (entry,),
                          direction=AT_MOST, margin=RECOVERY_MARGIN))
    rows += [
        Claim("rsrnn-fixates-object", "RS-RNN", "RS-RNN's fixations land on the object (one object among distractors)",
              "fixations land on small objects in cluttered scenes", "fixations_on_object", ("rsrnn_micro",)),
        Claim("rsrnn-fixates-small-objects", "RS-RNN",
              "RS-RNN fixates the small objects of multi-object scenes (multi-label)",
              "fixations land on small objects in cluttered scenes", "small_object_fixations",
              ("multilabel_rsrnn_micro",)),
    ]
    return rows


def find_claim(claim_id: str, attack_readout: int = 4) -> Claim:
    """The claim with id ``claim_id``."""
    for claim in claims(attack_readout):
        if claim.id == claim_id:
            return claim
    raise BioattnError(f"no claim with id '{claim_id}'")
