"""What the project knows: training methods, data sets and attribution attacks (registered
implementations, one object each), and the workflow's config keys.

A training method is one registered `Method`: its objective (the inner PGD loss that finds x′ and
the outer loss over θ), the loss terms it logs, the settings key of its regulariser weight, its
display name and colour in the reports, and settings of its own. Everything that names methods
(config validation, the CLIs' choices, the reports' names, colours and weights) asks this
registry; a new method is its implementation plus one `register(Method(...))` call.

The built-ins refer to their code as "module:attribute", imported on first use, so that the
workflow (which lists and checks names when it parses the Snakefile) does not import torch.

A data set is one registered `Dataset`: its raw files, its preparer, its network and its display
name; its input shape and default settings are its block in defaults.yaml (or its `defaults`).

An attribution attack is one registered `Attack`: how it builds each image's map loss (or none),
how many runs it takes and whether it is random, or a whole-batch implementation (the noise
control). The workflow's top-level keys are a name list here, checked against the workflow
schema by tests/test_config.py.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .errors import ConfigError


# Top-level keys of a workflow config file (workflow/schemas/config.schema.yaml `properties:`).
# A CLI `--config` file is a workflow config file: it reads `hyperparameters:` and refuses any
# key outside this list, as the workflow does.
WORKFLOW_KEYS = ("datasets", "methods", "attacks", "data", "device", "seeds", "sweeps", "train_steps", "evaluation",
                 "reports", "resources", "hyperparameters")

# How the reports write a weight key (a method's `weight`); other keys are written as they are.
WEIGHT_SYMBOLS = {"lam": "λ", "beta": "β"}

Loss = Callable[..., Any]


def _resolve(target: Loss | str | None) -> Loss | None:
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


class _Registry:
    """Registered implementations of one kind, by name, in registration order."""

    def __init__(self, kind: str, unknown: str):
        self.kind, self.unknown, self.items = kind, unknown, {}

    def add(self, item: Any) -> Any:
        if item.name in self.items:
            raise ConfigError(f"{self.kind} '{item.name}' is already registered")
        self.items[item.name] = item
        return item

    def remove(self, name: str) -> None:
        self.items.pop(name, None)

    def get(self, name: str) -> Any:
        try:
            return self.items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.unknown} '{name}' (known: {', '.join(self.items)})") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self.items)


@dataclass(frozen=True)
class Method:
    """A training method. `inner(model, x, y, settings)` gives the loss PGD maximises over x′ (None:
    trained on clean inputs only); `outer(model, x, x_adv, y, settings)` gives (loss without
    weight decay, {term: unweighted tensor}) for the `terms` it names. Either may be a
    "module:attribute" string, imported when the objective is first used."""

    name: str
    outer: Loss | str
    inner: Loss | str | None
    terms: tuple[str, ...]          # logged components, besides weight_decay and total
    display: str                    # the reports' name
    weight: str | None = None       # settings key of the regulariser weight (None: no regulariser)
    colour: str | None = None       # the reports' colour (None: a grey)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # beneath defaults.yaml's train.<name>

    @property
    def outer_loss(self) -> Loss:
        return _resolve(self.outer)

    @property
    def inner_loss(self) -> Loss | None:
        return _resolve(self.inner)

    @property
    def weight_symbol(self) -> str | None:
        return None if self.weight is None else WEIGHT_SYMBOLS.get(self.weight, self.weight)


_METHODS = _Registry("method", "method")


def register(method: Method) -> Method:
    """Add a training method; a name is registered once."""
    return _METHODS.add(method)


def unregister(name: str) -> None:
    """Remove a registered method (tests that register their own)."""
    _METHODS.remove(name)


def method(name: str) -> Method:
    return _METHODS.get(name)


def method_names() -> tuple[str, ...]:
    """Every registered method, the built-ins first in registration order."""
    return _METHODS.names()


# ---- the built-in methods (method.md's table; objectives in attrrob.objectives)

_OBJ = "attrrob.objectives:"
for _method in (
    # Okabe & Ito's colour-blind-safe palette without its black: seven hues that stay distinct
    # under protanopia, deuteranopia and tritanopia.
    Method("natural", _OBJ + "outer_natural", None, ("ce",), "Natural", colour="#56B4E9"),
    Method("madry", _OBJ + "outer_madry", _OBJ + "inner_ce", ("ce",), "Madry PGD-AT", colour="#E69F00"),
    Method("ig_norm", _OBJ + "outer_ig_norm", _OBJ + "inner_ig_l1", ("ce", "ig_l1"), "IG-NORM",
           weight="lam", colour="#009E73"),
    Method("ig_sum_norm", _OBJ + "outer_ig_sum_norm", _OBJ + "inner_ce_ig_l1", ("ce", "ig_l1"), "IG-SUM-NORM",
           weight="beta", colour="#0072B2"),
    Method("sarkar", _OBJ + "outer_sarkar", _OBJ + "inner_ce_ig_l1", ("ce", "cacr", "wacr"),
           "Sarkar (CACR + WACR)", weight="lam", colour="#D55E00"),
    Method("sarkar_cacr", _OBJ + "outer_sarkar_cacr", _OBJ + "inner_ce_ig_l1", ("ce", "cacr"),
           "Sarkar, CACR only", weight="lam", colour="#CC79A7"),
    Method("sarkar_wacr", _OBJ + "outer_sarkar_wacr", _OBJ + "inner_ce_ig_l1", ("ce", "wacr"),
           "Sarkar, WACR only", weight="lam", colour="#F0E442"),
):
    register(_method)

METHODS = method_names()  # the built-in methods (the workflow schema's enum lists these)


@dataclass(frozen=True)
class Dataset:
    """A data set. `prepare(dataset, raw_dir, settings, verify_sources)` reads its raw files and
    returns (arrays, source records, pixel scale, notes, differences from the paper);
    `network(spec, *, dataset, generator)` builds its model from its defaults.yaml `input:` spec.
    `raw_files` are its pinned downloads (none: it comes from elsewhere, as digits from
    scikit-learn); `layout` the archive layout its manifest records; `defaults` its `input:` spec
    and settings, where defaults.yaml has no block for it. Callables and values may be
    "module:attribute" strings, imported on first use."""

    name: str
    display: str                    # the reports' name
    prepare: Loss | str
    network: Loss | str
    raw_files: Any = ()
    layout: Any = None
    defaults: Mapping[str, Any] = field(default_factory=dict)  # its defaults.yaml block, when it has none there

    @property
    def preparer(self) -> Loss:
        return _resolve(self.prepare)

    @property
    def network_builder(self) -> Loss:
        return _resolve(self.network)

    @property
    def pinned_files(self) -> tuple:
        return tuple(_resolve(self.raw_files) or ())

    @property
    def archive_layout(self) -> Any:
        return _resolve(self.layout)


_DATASETS = _Registry("data set", "dataset")


def register_dataset(dataset: Dataset) -> Dataset:
    """Add a data set; a name is registered once (its defaults.yaml block gives shape and settings)."""
    return _DATASETS.add(dataset)


def unregister_dataset(name: str) -> None:
    """Remove a registered data set (tests that register their own)."""
    _DATASETS.remove(name)


def dataset(name: str) -> Dataset:
    return _DATASETS.get(name)


def dataset_names() -> tuple[str, ...]:
    return _DATASETS.names()


_PREP, _NET, _SRC = "attrrob.data.prepare:", "attrrob.models:", "attrrob.data.sources:"
for _dataset in (
    Dataset("mnist", "MNIST", _PREP + "prepare_idx", _NET + "mnist_cnn", _SRC + "MNIST_FILES"),
    Dataset("fashion_mnist", "Fashion-MNIST", _PREP + "prepare_idx", _NET + "mnist_cnn", _SRC + "FASHION_MNIST_FILES"),
    Dataset("gtsrb", "GTSRB", _PREP + "prepare_gtsrb", _NET + "gtsrb_resnet", _SRC + "GTSRB_FILES",
            layout=_PREP + "GTSRB_LAYOUT"),
    Dataset("flower", "Flower-17", _PREP + "prepare_flower", _NET + "flower_resnet", _SRC + "FLOWER_FILES",
            layout=_PREP + "FLOWER_LAYOUT"),
    Dataset("digits", "digits (8×8)", _PREP + "prepare_digits", _NET + "digits_cnn"),
):
    register_dataset(_dataset)

DATASETS = dataset_names()  # the built-in data sets (the workflow schema's enum lists these)


@dataclass(frozen=True)
class Attack:
    """An attribution attack (method.md, "Attacks"). The walk decreases `map_loss(maps, constant,
    height, width)` (per image), whose per-image constant (a mask, a centre) `objective(model, x,
    y, map_original, settings, *, indices, seed, target, max_rows)` builds; both None: no
    gradient, a random walk. `stochastic`: fresh randomness every step (no early stop, every run
    walks again). `runs`: the setting that counts its runs (None: one run). `batch`: a whole-batch
    implementation instead of the walk (the noise control); `effective_settings(settings)`: the
    settings it really runs (and records). `takes_target`: a target mask may be given.
    Callables may be "module:attribute" strings, imported on first use."""

    name: str
    objective: Loss | str | None = None
    map_loss: Loss | str | None = None
    stochastic: bool = False
    runs: str | None = "restarts"
    batch: Loss | str | None = None
    effective_settings: Loss | str | None = None
    takes_target: bool = False

    @property
    def objective_fn(self) -> Loss | None:
        return _resolve(self.objective)

    @property
    def map_loss_fn(self) -> Loss | None:
        return _resolve(self.map_loss)

    @property
    def batch_fn(self) -> Loss | None:
        return _resolve(self.batch)

    def settings_run(self, settings: dict) -> dict:
        """The settings the attack runs with (its `effective_settings`, else as given)."""
        hook = _resolve(self.effective_settings)
        return hook(settings) if hook is not None else settings


_ATTACKS = _Registry("attack", "attack")


def register_attack(attack: Attack) -> Attack:
    return _ATTACKS.add(attack)


def unregister_attack(name: str) -> None:
    _ATTACKS.remove(name)


def attack(name: str) -> Attack:
    return _ATTACKS.get(name)


def attack_names() -> tuple[str, ...]:
    return _ATTACKS.names()


_SAL, _NOISE = "attrrob.attacks.saliency:", "attrrob.attacks.noise:"
for _attack in (
    Attack("topk", _SAL + "topk_constant", _SAL + "mass_off_mask_loss"),
    Attack("random", stochastic=True, runs="random_restarts"),
    Attack("mass_center", _SAL + "mass_center_constant", _SAL + "centre_shift_loss"),
    Attack("targeted", _SAL + "target_constant", _SAL + "mass_on_mask_loss", takes_target=True),
    # The same-ε random-sign control (one IG map per image, no search): what an attack adds over noise.
    Attack("noise", runs=None, batch=_NOISE + "noise_batch", effective_settings=_NOISE + "effective_settings"),
):
    register_attack(_attack)

ATTACKS = attack_names()  # the built-in attacks (the workflow schema's enum lists these)
