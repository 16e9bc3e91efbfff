"""White-box attacks on pixels in [0, 1]: FGSM, PGD (L-inf or L2, random start, restarts,
expectation over transformation for models that sample), and AutoAttack through torchattacks.

Attacks take a model that maps pixels in [0, 1] to logits (see
:class:`bioattn.evaluate.runtime.PixelModel`, which normalises inside and picks the attacked
readout of a multi-readout model). Official settings (docs/evaluation.md): FGSM eps 1/255, one
gradient step of eps, no random start; PGD eps 1/255, step 0.5/255, 5 iterations, uniform random
start; both L-inf.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..data.pixels import Pixels
from ..errors import BioattnError
from ..protocol import forward_readouts
from .glimpses import ScanPaths
from .runtime import PixelModel
from .summary import format_eps

NORMS = ("Linf", "L2")
ATTACKS = ("fgsm", "pgd", "autoattack")
DEFAULT_EPS = 1 / 255
DEFAULT_PGD_ITERS = 5


def check_attack_args(eps: float, step_size: float | None = None, iters: int = 1, norm: str = "Linf",
                      restarts: int = 1, eot: int = 1) -> None:
    """Raise :class:`BioattnError` on settings no attack can use."""
    if not math.isfinite(eps) or eps < 0:
        raise BioattnError(f"eps must be a finite number >= 0, got {eps}")
    if step_size is not None and (not math.isfinite(step_size) or step_size <= 0):
        raise BioattnError(f"attack step size must be > 0, got {step_size}")
    if iters < 1:
        raise BioattnError(f"attack iterations must be >= 1, got {iters}")
    if norm not in NORMS:
        raise BioattnError(f"unknown attack norm '{norm}' (known: {', '.join(NORMS)})")
    if restarts < 1:
        raise BioattnError(f"restarts must be >= 1, got {restarts}")
    if eot < 1:
        raise BioattnError(f"EOT samples must be >= 1, got {eot}")


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def _project(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """``x_adv`` moved into the eps ball around ``x`` and into [0, 1]."""
    delta = x_adv - x
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        factor = torch.clamp(eps / (_per_sample_norm(delta) + 1e-12), max=1.0)
        delta = delta * factor
    return (x + delta).clamp(0.0, 1.0)


def _random_start(x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "Linf":
        delta = torch.empty_like(x).uniform_(-eps, eps)
    else:
        direction = torch.randn_like(x)
        radius = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype)
        delta = direction / (_per_sample_norm(direction) + 1e-12) * radius * eps
    return _project(x, x + delta, eps, norm)


def _loss_gradient(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, eot: int,
                   on_pass: Callable[[int], None] | None = None) -> torch.Tensor:
    """Gradient of the summed cross-entropy w.r.t. the input, averaged over ``eot`` forward
    passes (each pass resamples a stochastic model); ``on_pass(1)`` after each pass."""
    grad = torch.zeros_like(x_adv)
    for _ in range(eot):
        inp = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(inp).float(), y, reduction="sum")
        grad += torch.autograd.grad(loss, inp)[0]
        if on_pass is not None:
            on_pass(1)
    return grad / eot


def gradient_passes(attack: str, iters: int | None = None, restarts: int = 1, eot: int = 1) -> int | None:
    """Forward and backward passes one batch costs under ``attack`` (FGSM: ``eot``; PGD:
    ``iters x restarts x eot``); None for AutoAttack, whose parts stop early."""
    if attack == "fgsm":
        return eot
    if attack == "pgd":
        return (DEFAULT_PGD_ITERS if iters is None else iters) * restarts * eot
    return None


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = DEFAULT_EPS,
    step_size: float | None = None,
    iters: int = DEFAULT_PGD_ITERS,
    norm: str = "Linf",
    random_start: bool = True,
    restarts: int = 1,
    eot: int = 1,
    on_pass: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Untargeted projected gradient ascent on the cross-entropy of ``model`` (pixels -> logits).

    ``step_size`` defaults to ``eps / 2`` (0.5/255 at the official eps 1/255). L-inf steps follow
    the gradient's sign, L2 steps its unit direction. With ``restarts > 1`` each example keeps
    the first restart that fools the model. ``eot > 1`` averages the gradient over that many
    passes (expectation over transformation, for models that sample). ``on_pass(1)`` is called
    after every forward and backward pass (progress of a long attack). Returns adversarial
    pixels within the eps ball of ``x`` and inside [0, 1].
    """
    step_size = eps / 2 if step_size is None else step_size
    check_attack_args(eps, step_size if eps > 0 else None, iters, norm, restarts, eot)
    x = x.detach()
    if eps == 0:
        return x.clone()
    best = None
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        x_adv = _random_start(x, eps, norm) if random_start else x.clone()
        for _ in range(iters):
            grad = _loss_gradient(model, x_adv, y, eot, on_pass)
            if norm == "Linf":
                x_adv = x_adv + step_size * grad.sign()
            else:
                x_adv = x_adv + step_size * grad / (_per_sample_norm(grad) + 1e-10)
            x_adv = _project(x, x_adv.detach(), eps, norm)
        if restarts == 1:
            return x_adv
        with torch.no_grad():
            now_fooled = model(x_adv).argmax(dim=1) != y
        if best is None:
            best = x_adv
        else:
            take = now_fooled & ~fooled
            best = torch.where(take.view(-1, *([1] * (x.dim() - 1))), x_adv, best)
        fooled |= now_fooled
    return best


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = DEFAULT_EPS,
         norm: str = "Linf", eot: int = 1, on_pass: Callable[[int], None] | None = None) -> torch.Tensor:
    """Fast gradient sign method: one step of size ``eps`` from ``x`` (no random start)."""
    return pgd(model, x, y, eps=eps, step_size=eps if eps > 0 else None, iters=1, norm=norm,
               random_start=False, eot=eot, on_pass=on_pass)


AUTOATTACK_VERSIONS = ("standard", "rand")
AUTOATTACK_ITERS = 100
AUTOATTACK_TARGETS = 9
AUTOATTACK_QUERIES = 5000
AUTOATTACK_RAND_EOT = 20


def autoattack_parts(model: nn.Module, eps: float, norm: str, n_classes: int, version: str,
                     seed: int) -> list[tuple[str, nn.Module]]:
    """The named torchattacks components of an AutoAttack version. Parts whose loss needs more
    classes than the model has are left out (targeted DLR needs 4, DLR 3)."""
    # deferred: torchattacks is only needed by the attacks that use it
    import torchattacks

    # torchattacks aims at the (n_classes - 1) most likely other classes
    targets = min(n_classes, AUTOATTACK_TARGETS + 1)
    common = dict(norm=norm, eps=eps, seed=seed)
    if version == "standard":
        parts = [
            ("apgd-ce", torchattacks.APGD(model, steps=AUTOATTACK_ITERS, loss="ce", **common)),
            ("apgd-t", torchattacks.APGDT(model, steps=AUTOATTACK_ITERS, n_classes=targets, **common)),
            ("fab-t", torchattacks.FAB(model, steps=AUTOATTACK_ITERS, multi_targeted=True,
                                       n_classes=targets, **common)),
            ("square", torchattacks.Square(model, n_queries=AUTOATTACK_QUERIES, **common)),
        ]
    else:
        parts = [
            (f"apgd-{loss}", torchattacks.APGD(model, steps=AUTOATTACK_ITERS, loss=loss,
                                               eot_iter=AUTOATTACK_RAND_EOT, **common))
            for loss in ("ce", "dlr")
        ]
    needs = {"apgd-t": 4, "apgd-dlr": 3}
    return [(name, part) for name, part in parts if n_classes >= needs.get(name, 2)]


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = DEFAULT_EPS,
               norm: str = "Linf", n_classes: int | None = None, version: str = "standard",
               seed: int = 0) -> torch.Tensor:
    """AutoAttack (Croce & Hein 2020) built from torchattacks' components with the reference
    settings. ``standard``: APGD-CE, APGD-T and FAB-T (100 iterations, the 9 most likely other
    classes as targets) then Square (5000 queries), each run on the examples the previous ones
    did not break. ``rand`` (for models that sample): APGD-CE and APGD-DLR with 20 EOT samples
    per gradient."""
    # deferred: torchattacks is only needed by the attacks that use it
    import torchattacks

    check_attack_args(eps, None, 1, norm)
    if version not in AUTOATTACK_VERSIONS:
        raise BioattnError(f"unknown AutoAttack version '{version}' (known: {', '.join(AUTOATTACK_VERSIONS)})")
    x = x.detach()
    if eps == 0:
        return x.clone()
    if n_classes is None:
        with torch.no_grad():
            n_classes = model(x[:1]).shape[1]
    parts = [part for _, part in autoattack_parts(model, eps, norm, n_classes, version, seed)]
    attack = torchattacks.MultiAttack(parts)
    for part in [attack, *parts]:
        part.set_device(x.device)
    adv = attack(x, y)
    return _project(x, adv.detach().to(x), eps, norm)


@dataclass(frozen=True)
class AttackRun:
    """One attack setting: the ``attack`` (``fgsm``, ``pgd``, ``autoattack``) at budget ``eps``
    (pixels in [0, 1]) in ``norm``; PGD's ``step_size`` (default eps/2), ``iters`` (default
    :data:`DEFAULT_PGD_ITERS`), random ``restarts`` and ``eot`` samples per gradient; the
    readout it aims at (``attack_readout``, 1-based; None: the final one) of a model run for
    ``readouts`` readouts (passes, glimpses); AutoAttack's ``autoattack_version``; the ``seed`` of
    its random draws."""

    attack: str = "pgd"
    eps: float = DEFAULT_EPS
    step_size: float | None = None
    iters: int | None = None
    norm: str = "Linf"
    restarts: int = 1
    eot: int = 1
    attack_readout: int | None = None
    readouts: int | None = None
    autoattack_version: str = "standard"
    seed: int = 0


def evaluate_attack(
    model: nn.Module,
    loader: DataLoader,
    pixels: Pixels,
    run: AttackRun,
    *,
    device: torch.device | str = "cpu",
    progress: Callable[..., None] | None = None,
    scan_paths: ScanPaths | None = None,
    image_indices: Sequence[int] | None = None,
) -> dict:
    """Accuracy (percent) under the attack ``run`` on ``loader``'s normalised images.

    The attack targets the prediction at ``run.attack_readout`` (``None`` = final) of a model
    run for ``run.readouts`` readouts; the result lists the run's settings, clean and
    adversarial accuracy at every readout (``per_readout_*``, one entry for plain models), the
    final prediction's (``clean_top1``, ``top1``) and the attacked readout's
    (``attacked_readout_top1``).

    ``progress(n)`` follows the work: FGSM and PGD call it after every forward and backward
    pass of the attack (:func:`gradient_passes` per batch), AutoAttack after every batch with
    the batch's number of images; ``progress(0, info)`` says which images are attacked.

    ``scan_paths`` records a glimpse model's fixations on the clean and on the adversarial
    images (suite ``attack``; condition ``clean`` or the attack setting, e.g. ``pgd eps=0.002``);
    ``image_indices`` numbers the loader's images (default ``0, 1, ...``).
    """
    attack, eps, norm, eot, seed = run.attack, run.eps, run.norm, run.eot, run.seed
    attack_readout, readouts = run.attack_readout, run.readouts
    if attack not in ATTACKS:
        raise BioattnError(f"unknown attack '{attack}' (known: {', '.join(ATTACKS)})")
    iters, step_size, random_start, restarts = _attack_steps(attack, eps, run.step_size, run.iters, run.restarts)
    check_attack_args(eps, step_size if eps > 0 else None, iters, norm, restarts, eot)
    device = torch.device(device)
    model.eval()
    target = PixelModel(model, pixels, readout=attack_readout, readouts=readouts).to(device)
    torch.manual_seed(seed)
    clean_hits = adv_hits = None
    seen = 0
    max_linf = max_l2 = 0.0
    eot_text = f" EOT{eot}" if eot > 1 and attack != "autoattack" else ""
    condition = f"{attack}{eot_text} eps={eps:g}"

    def readouts_of(x_unit: torch.Tensor, what: str) -> torch.Tensor:
        out = forward_readouts(model, pixels.from_unit(x_unit), readouts=readouts)
        extras = out.extras or {}
        if scan_paths is not None and "fixations" in extras and "sigmas" in extras:
            ids = (range(seen, seen + x_unit.shape[0]) if image_indices is None
                   else image_indices[seen:seen + x_unit.shape[0]])
            scan_paths.add(attack, what, list(ids), extras["fixations"], extras["sigmas"], x_unit.shape[-2:])
        return out.all_readouts()

    of_total = f" of {len(loader.dataset)}" if hasattr(loader, "dataset") else ""
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        if progress is not None:
            progress(0, f"eps={format_eps(eps)}{eot_text}, images {seen + 1}-{seen + labels.shape[0]}{of_total}")
        x = pixels.to_unit(images.float())
        with torch.no_grad():
            clean_readouts = readouts_of(x, "clean")
        if attack_readout is not None and not 1 <= attack_readout <= clean_readouts.shape[0]:
            raise BioattnError(
                f"attack readout {attack_readout} is outside the model's 1..{clean_readouts.shape[0]} readouts"
            )
        if attack == "autoattack":
            x_adv = autoattack(target, x, labels, eps=eps, norm=norm,
                               n_classes=clean_readouts.shape[-1], version=run.autoattack_version, seed=seed)
        else:
            x_adv = pgd(target, x, labels, eps=eps, step_size=step_size if eps > 0 else None,
                        iters=iters, norm=norm, random_start=random_start, restarts=restarts, eot=eot,
                        on_pass=progress if eps > 0 else None)
        with torch.no_grad():
            adv_readouts = readouts_of(x_adv, condition)
        delta = (x_adv - x).flatten(1)
        max_linf = max(max_linf, delta.abs().max().item() if delta.numel() else 0.0)
        max_l2 = max(max_l2, delta.norm(dim=1).max().item() if delta.numel() else 0.0)
        clean_hits = _add_hits(clean_hits, clean_readouts, labels)
        adv_hits = _add_hits(adv_hits, adv_readouts, labels)
        seen += labels.shape[0]
        if progress is not None and attack == "autoattack":
            progress(labels.shape[0])
        elif progress is not None and eps == 0:  # no pass was run: the batch's share at once
            progress(gradient_passes(attack, iters, restarts, eot))
    settings = dict(attack=attack, eps=eps, norm=norm, step_size=step_size, iters=iters, random_start=random_start,
                    restarts=restarts if attack != "autoattack" else 1, eot=eot if attack != "autoattack" else 1,
                    attack_readout=attack_readout, readouts=readouts)
    if attack == "autoattack":
        n_classes = clean_readouts.shape[-1] if seen else 2
        parts = [name for name, _ in autoattack_parts(target, max(eps, 1e-12), norm, n_classes,
                                                      run.autoattack_version, seed)]
        settings.update(version=run.autoattack_version, parts=parts, step_size=None, iters=None, random_start=None)
    return _attack_result(settings, seen, clean_hits, adv_hits, max_linf, max_l2)


def _add_hits(hits: torch.Tensor | None, readouts: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Correct predictions per readout (``readouts``: readouts x batch x classes) added to ``hits``."""
    batch = (readouts.argmax(-1) == labels[None]).sum(dim=1).cpu()
    return batch if hits is None else hits + batch


def _attack_steps(attack: str, eps: float, step_size: float | None, iters: int | None,
                  restarts: int) -> tuple[int, float | None, bool, int]:
    """``(iters, step_size, random_start, restarts)`` of an attack: FGSM is one deterministic
    step of size eps (restarts would repeat it); PGD and AutoAttack start at random, PGD with
    steps of eps/2 by default."""
    if attack == "fgsm":
        return 1, eps, False, 1
    return (DEFAULT_PGD_ITERS if iters is None else iters), (eps / 2 if step_size is None else step_size), True, \
        restarts


def _attack_result(settings: dict, seen: int, clean_hits: torch.Tensor | None, adv_hits: torch.Tensor | None,
                   max_linf: float, max_l2: float) -> dict:
    """The attack's settings with its counts turned into top-1 (percent) at every readout."""
    result = settings | {"n": seen, "max_linf": max_linf, "max_l2": max_l2}
    if seen == 0:
        return result | {"clean_top1": math.nan, "top1": math.nan, "attacked_readout_top1": math.nan,
                         "per_readout_clean_top1": [], "per_readout_top1": []}
    per_clean = [100.0 * v / seen for v in clean_hits.tolist()]
    per_adv = [100.0 * v / seen for v in adv_hits.tolist()]
    readout = settings["attack_readout"]
    t = len(per_adv) - 1 if readout is None else readout - 1
    return result | {
        "clean_top1": per_clean[-1],
        "top1": per_adv[-1],
        "attacked_readout_top1": per_adv[t],
        "per_readout_clean_top1": per_clean,
        "per_readout_top1": per_adv,
    }
