"""The identity task shared by every architecture family: train a net to reproduce its input on
one image (mean-squared error, full batch), then score every test set against the identity and
against the constant (see `metrics.py`).

A family subclass builds `self.layers` and implements `layer_outputs(x)`, which yields the output
of each layer in turn (the last one is the network output).
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from jsonargparse.typing import NonNegativeInt, PositiveFloat, PositiveInt, restricted_number_type
from pytorch_lightning import LightningModule
from torch import nn

from lightning_modules.errors import TrainingFailed
from lightning_modules.layer_activity import LayerActivity, first_blind_layer
from lightning_modules.metrics import DEFAULT_VERDICT_THRESHOLD, IdentityScores, score_key
from lightning_modules.step_path import bare_step, cheap_cuda_checks, hooks_in_the_way

# Typed choices and bounds: LightningCLI (jsonargparse) checks them before anything is built and
# `--help` lists them; a notebook that builds a module by hand is trusted.
Init = Literal[
    "default",
    "default_zero_bias",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_normal",
    "kaiming_uniform",
    "orthogonal",
]
Optimizer = Literal["adam", "amsgrad", "sgd"]
Activation = Literal["relu", "linear"]
INITS, OPTIMIZERS, ACTIVATIONS = get_args(Init), get_args(Optimizer), get_args(Activation)
PositiveFiniteFloat = restricted_number_type(
    "PositiveFiniteFloat", float, [(">", 0), ("<", math.inf)], join="and"
)
Momentum = restricted_number_type("Momentum", float, [(">=", 0), ("<", 1)], join="and")
CorrelationThreshold = restricted_number_type(
    "CorrelationThreshold", float, [(">", 0), ("<=", 1)], join="and"
)
# A run whose final training MSE is above this has not fitted its image: its test scores say
# nothing about memorization, and `train/fitted` is 0. Pixels are in [0, 1]; 1e-3 is an RMS
# error of 0.03 per pixel, well below what an eye sees in a panel.
DEFAULT_FIT_THRESHOLD = 1e-3
# A run whose final training MSE is more than this many times its first step's has diverged,
# even with a finite loss: training only ever brings a working net's loss down, and a net at 10x
# its random-init error (outputs far outside [0, 1]) has been thrown off by its optimizer.
DIVERGED_FACTOR = 10.0


class IdentityTaskModule(LightningModule):
    """Base of the family modules.

    Args:
        image_shape: (channels, height, width); linked from the data module.
        optimizer: adam (fused where the device supports it), amsgrad (Adam that divides by the
            largest squared-gradient average so far, so its steps shrink as the gradients do and a
            fitted net is not thrown off its minimum) or sgd (with `momentum`).
        lr: learning rate.
        momentum: SGD momentum (unused by adam and amsgrad).
        warmup_steps: the learning rate rises linearly from lr / warmup_steps to lr over the first
            `warmup_steps` steps, then stays at lr; 0 = no warmup.
        init: weight initialization: default (PyTorch's), default_zero_bias (PyTorch's weights,
            zero biases), xavier_uniform, xavier_normal, kaiming_normal, kaiming_uniform or
            orthogonal; biases start at zero except with default.
        init_gain: every weight of the initialized net times this, biases untouched: a dose of
            the init's scale at an unchanged distribution. 1 leaves the net exactly as `init`
            makes it. PyTorch's default conv weights have std 1/sqrt(3 fan_in) and Kaiming-normal
            for ReLU sqrt(2/fan_in): default with gain sqrt(6) (about 2.449) has Kaiming's scale.
        fit_threshold: final training MSE above which the run is flagged as not fitted.
        stop_loss: stop training once the training MSE is below this (checked every
            `check_every` steps, and not before the trainer's `min_steps`); null = train for the
            whole step budget (`max_steps`).
        check_every: steps between loss checks (divergence, `stop_loss`); each check is one
            device-to-host sync.
        verdict_threshold: correlation a per-image verdict of identity or constant needs.
    """

    family = "base"
    # Optimizer steps per Lightning `training_step`: None runs up to the next loss check
    # (`check_every`), 1 is one step per call. A full-batch step of these nets can cost less than
    # Lightning's bookkeeping around a call (about 0.5 ms, as much as a 1-layer CNN's step), so a
    # call runs many. Each step is the one a per-step loop takes (the same batch, order, warmup
    # and checks), so the weights after N steps do not depend on it. Not a config key: it changes
    # the speed, never the result.
    steps_per_call: int | None = None
    _bare_steps = False  # set at the start of training (step_path.py)

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        test_set_names: Sequence[str] | None = None,
        optimizer: Optimizer = "adam",
        lr: PositiveFiniteFloat = 1e-3,
        momentum: Momentum = 0.9,
        warmup_steps: NonNegativeInt = 0,
        init: Init = "xavier_uniform",
        init_gain: PositiveFiniteFloat = 1.0,
        fit_threshold: PositiveFloat = DEFAULT_FIT_THRESHOLD,
        stop_loss: PositiveFloat | None = None,
        check_every: PositiveInt = 50,
        verdict_threshold: CorrelationThreshold = DEFAULT_VERDICT_THRESHOLD,
    ):
        super().__init__()
        # Called here, it also records the calling family's arguments (depth, channels, ...). The
        # command line logs the whole config under its dotted keys (model.depth, ...), the names
        # sweeps use, so Lightning's own copy under bare names stays out of W&B.
        self.save_hyperparameters(logger=False, ignore=["test_set_names"])
        self.image_shape = tuple(int(s) for s in image_shape)
        # Named test sets log as test/<name>/<score>; without names (a notebook's own loaders)
        # the i-th test loader is set<i>.
        self.test_set_names = list(test_set_names or [])
        # Buffers, not attributes: they travel with the weights between processes (DDP spawn
        # workers, the test run after fit, a checkpoint). NaN = not measured yet; the training
        # images are captured from the first training batch (empty until then).
        self.register_buffer("final_loss", torch.tensor(float("nan")))
        # The first step's loss and the last one checked: a run that ends far above where it
        # started has diverged even when its loss stays finite (DIVERGED_FACTOR).
        self.first_loss: float | None = None
        self.last_loss: float | None = None
        self.register_buffer("train_images", torch.empty(0))
        # The optimizer steps trained, -1 until training ends: a DDP spawn worker or a re-probe
        # gets a fresh trainer whose own count is 0.
        self.register_buffer("trained_steps", torch.tensor(-1))
        self.register_load_state_dict_pre_hook(_resize_train_images)
        self.register_load_state_dict_pre_hook(_checkpoint_without_steps)
        self.test_scores = nn.ModuleDict()
        # The last test's scores per test set, {set: {score: value}}, and per hidden layer
        # ({"live_share": [...], "input_share": [...], "first_blind_layer": k or None}), for a
        # caller to read.
        self.test_results: dict[str, dict[str, float]] = {}
        self.layer_results: dict = {}
        self.layer_activity = LayerActivity()
        self.automatic_optimization = False

    # --- architecture -------------------------------------------------------------------------
    def layer_outputs(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Keep only the last output: holding every layer's would cost depth x the memory in eval.
        return deque(self.layer_outputs(x), maxlen=1)[0]

    def hidden_maps(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        """One (N, H, W) map per layer, the channel mean of its output (paper figure 4);
        None for a family whose layers are not images."""
        return [out.mean(dim=1) for out in self.layer_outputs(x)]

    # How a hyperparameter reads in a run name ("d5", "wu10"): declared by the family that has
    # it, read by the run names and by the report's row labels (lightning_modules.short_names).
    SHORT_NAMES: dict[str, str] = {"depth": "d", "warmup_steps": "wu"}

    @classmethod
    def short(cls, key: str, value) -> str:
        return f"{cls.SHORT_NAMES[key]}{value}"

    def run_name_parts(self) -> list[str]:
        """The family's hyperparameters as short name parts, e.g. ['cnn', 'relu', 'd5']."""
        raise NotImplementedError

    def name_parts(self) -> list[str]:
        hp = self.hparams
        warmup = self.short("warmup_steps", hp.warmup_steps) if hp.warmup_steps else ""
        optimizer = f"{hp.optimizer}{hp.lr:g}{warmup}"
        gain = hp.get("init_gain", 1.0)
        init = hp.init if gain == 1 else f"{hp.init}x{gain:.4g}"
        return [*self.run_name_parts(), init, optimizer]

    def init_weights(self) -> None:
        self._init_distribution()
        gain = self.hparams.get("init_gain", 1.0)
        if gain != 1:  # gain 1 touches nothing: the net is bit for bit the one `init` made
            with torch.no_grad():
                for module in self.modules():
                    if isinstance(module, nn.Linear | nn.Conv2d):
                        module.weight.mul_(gain)

    def _init_distribution(self) -> None:
        init, relu = self.hparams.init, self.hparams.get("activation") == "relu"
        if init == "default":
            return
        for module in self.modules():
            if not isinstance(module, nn.Linear | nn.Conv2d):
                continue
            weight = module.weight
            if init == "default_zero_bias":
                # PyTorch's own weights without its random biases: issue 16 compares the two at
                # depth 20 (REPRODUCTION.md).
                pass
            elif init == "xavier_uniform":
                nn.init.xavier_uniform_(weight)
            elif init == "xavier_normal":
                nn.init.xavier_normal_(weight)
            elif init == "kaiming_normal":
                nn.init.kaiming_normal_(weight, nonlinearity="relu" if relu else "linear")
            elif init == "kaiming_uniform":
                nn.init.kaiming_uniform_(weight, nonlinearity="relu" if relu else "linear")
            elif init == "orthogonal":
                nn.init.orthogonal_(weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def parameter_counts(self) -> dict[str, int]:
        """All parameters, and weights only (the paper's counts leave biases out)."""
        weights = sum(
            m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear | nn.Conv2d)
        )
        return {"model/params": sum(p.numel() for p in self.parameters()), "model/weights": weights}

    # --- training ---------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        optimizer = self._optimizer()
        if not hp.warmup_steps:
            return optimizer
        schedule = functools.partial(linear_warmup, steps=hp.warmup_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _optimizer(self) -> torch.optim.Optimizer:
        hp = self.hparams
        if hp.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum)
        amsgrad = hp.optimizer == "amsgrad"
        try:
            return torch.optim.Adam(self.parameters(), lr=hp.lr, amsgrad=amsgrad, fused=True)
        except RuntimeError:  # a device or dtype without the fused kernel
            return torch.optim.Adam(self.parameters(), lr=hp.lr, amsgrad=amsgrad)

    def on_fit_start(self) -> None:
        if self.logger is not None:
            counts = self.parameter_counts()
            self.logger.log_hyperparams(counts)
            self.logger.log_metrics(counts, step=0)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self.train_images.numel() == 0:
            self._capture_train_images(batch)

    def _capture_train_images(self, batch) -> None:
        """The training images, whole: the set the data module's first batch carries (a
        minibatch is a part of it); from a plain tensor loader (a notebook's own), the first
        batch, whose shards under DDP are gathered here."""
        images, _, whole = unpack_train_batch(batch)
        if whole is not None:
            # As the batch came: on the device, in the precision plugin's dtype.
            self.train_images = whole.to(device=images.device, dtype=images.dtype).clone()
            return
        if isinstance(batch, dict):
            raise RuntimeError(
                "the training stream's first batch carries no training set ('whole'): build "
                "batches with datamodules.single_example.train_batch"
            )
        images = images.detach()
        if self.trainer.world_size > 1:
            images = self.all_gather(images).flatten(0, 1)
        self.train_images = images.clone()

    def on_train_start(self) -> None:
        self._bare_steps = not hooks_in_the_way(self.trainer, self)

    def training_step(self, batch, batch_idx: int) -> None:
        images, minibatch, _ = unpack_train_batch(batch)
        if minibatch is None:  # a plain tensor loader: a part of the captured set is a minibatch
            minibatch = len(images) * self.trainer.world_size < len(self.train_images)
        with cheap_cuda_checks(self.device):
            loss = self._train_steps(images, minibatch)
        if self.trainer.progress_bar_callback is not None:
            self.log("train/loss", loss, prog_bar=True, logger=False, batch_size=len(images))

    def _train_steps(self, batch: torch.Tensor, minibatch: bool) -> torch.Tensor:
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        log_every = self.trainer.log_every_n_steps
        # A minibatch (a part of the training set) is worth one step: the next one is new.
        for _ in range(1 if minibatch else self._steps_this_call()):
            loss = F.mse_loss(self(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            if self._bare_steps:
                # Nothing would run in the hooks (step_path.py): the same backward and step,
                # still counted by Lightning's own progress tracking around the step.
                loss.backward()
                bare_step(optimizer)
            else:
                self.manual_backward(loss)
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step = self.global_step  # steps done, this one included
            logged, checked = step % log_every == 0, step % self.hparams.check_every == 0
            if not (logged or checked or self.first_loss is None):
                continue
            value = loss.item()  # one device-to-host sync, only on the steps that need it
            if self.first_loss is None:
                self.first_loss = value
            if logged:
                for logger in self.loggers:
                    logger.log_metrics({"train/loss": value}, step=step)
            if checked:
                self._check_loss(value)
        return loss

    def _steps_this_call(self) -> int:
        """Up to the next loss check (a stop or a divergence is seen on the same step as in a
        per-step loop) and never past max_steps, which Lightning checks between calls only."""
        done, every = self.global_step, self.hparams.check_every
        steps = every - done % every
        if self.steps_per_call is not None:
            steps = min(steps, self.steps_per_call)
        max_steps = self.trainer.max_steps
        if max_steps is not None and max_steps >= 0:
            steps = min(steps, max_steps - done)
        return max(steps, 1)

    def _check_loss(self, loss: float) -> None:
        self.last_loss = loss
        if not math.isfinite(loss):
            raise TrainingFailed(
                f"training diverged: loss {loss} at step {self.global_step} "
                f"(lr={self.hparams.lr:g}, {self.hparams.optimizer})"
            )
        # Before the trainer's min_steps Lightning would ignore the stop and say so at every check.
        min_steps = self.trainer.min_steps or 0
        stop_loss = self.hparams.stop_loss
        if stop_loss is not None and loss < stop_loss and self.global_step >= min_steps:
            self.trainer.should_stop = True

    @torch.no_grad()
    def on_train_end(self) -> None:
        images = self.train_images
        loss = F.mse_loss(self(images), images).item()
        if not math.isfinite(loss):
            raise TrainingFailed(f"training diverged: final training loss is {loss}")
        first = self.first_loss
        if first is not None and loss > DIVERGED_FACTOR * first:
            raise TrainingFailed(
                f"training diverged: final training loss {loss:.3g} is more than "
                f"{DIVERGED_FACTOR:g} x the first step's {first:.3g} "
                f"(lr={self.hparams.lr:g}, {self.hparams.optimizer})"
            )
        self.final_loss.fill_(loss)
        self.trained_steps.fill_(self.global_step)
        summary = {
            "train/final_loss": loss,
            "train/fitted": float(loss <= self.hparams.fit_threshold),
            "train/steps": float(self.global_step),
        }
        if self.logger is not None:
            self.logger.log_metrics(summary, step=self.global_step)

    @property
    def final_train_loss(self) -> float | None:
        """The training MSE measured after the last step; None before training ends."""
        loss = self.final_loss.item()
        return None if math.isnan(loss) else loss

    @property
    def steps_done(self) -> int:
        """The optimizer steps this net was trained for, wherever its weights went since; the
        trainer's count before training has ended."""
        steps = int(self.trained_steps)
        return steps if steps >= 0 else self.global_step

    @property
    def fitted(self) -> bool | None:
        if self.final_train_loss is None:
            return None
        return self.final_train_loss <= self.hparams.fit_threshold

    # --- evaluation -------------------------------------------------------------------------
    def on_test_start(self) -> None:
        if self.train_images.numel() == 0:
            raise RuntimeError(
                "this net has no training images to score against: test it after fit, or from "
                "a checkpoint"
            )
        self.test_scores = nn.ModuleDict()
        self.layer_activity = LayerActivity().to(self.device)

    def test_set_name(self, dataloader_idx: int) -> str:
        if dataloader_idx < len(self.test_set_names):
            return self.test_set_names[dataloader_idx]
        return f"set{dataloader_idx}"

    def _scores(self, name: str) -> IdentityScores:
        if name not in self.test_scores:
            metric = IdentityScores(self.hparams.verdict_threshold).to(self.device)
            self.test_scores[name] = metric
        return self.test_scores[name]

    def constant_targets(self, outputs: torch.Tensor) -> torch.Tensor:
        """What memorization would output for each image: the training image, or with several
        training images, the one the output correlates with most."""
        train = self.train_images
        if len(train) == 1:
            return train.expand_as(outputs)
        flat = outputs.flatten(1)
        out = F.normalize(flat - flat.mean(1, keepdim=True), dim=1)
        tr = train.flatten(1)
        tr = F.normalize(tr - tr.mean(1, keepdim=True), dim=1)
        return train[(out @ tr.T).argmax(dim=1)]

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        (inputs,) = batch
        outputs = self._forward_measuring_layers(inputs)
        self._scores(self.test_set_name(dataloader_idx)).update(
            inputs, outputs, self.constant_targets(outputs)
        )

    def _forward_measuring_layers(self, inputs: torch.Tensor) -> torch.Tensor:
        """The net's output, in the same pass feeding every hidden layer's output (all but the
        last) to the layer-activity metric; one layer is held at a time."""
        previous = None
        for index, output in enumerate(self.layer_outputs(inputs)):
            if previous is not None:
                self.layer_activity.update(index - 1, previous)
            previous = output
        return previous

    @torch.no_grad()
    def layer_activity_of(self, inputs: torch.Tensor) -> dict:
        """The per-layer measurement of a test (`live_share`, `input_share`, `first_blind_layer`)
        on `inputs` alone, for a net in any state: at init, `init-signal` puts it beside the
        trained runs' own."""
        measured, self.layer_activity = self.layer_activity, LayerActivity().to(inputs.device)
        try:
            self._forward_measuring_layers(inputs)
            return self._layer_results()
        finally:
            self.layer_activity = measured

    def _layer_results(self) -> dict:
        """What the layer-activity metric measured, with the first blind layer; {} without
        hidden layers."""
        if not self.layer_activity.num_layers:
            return {}
        activity = self.layer_activity.compute()
        blind = first_blind_layer(activity["input_share"], activity["live_share"])
        return {**activity, "first_blind_layer": blind}

    def on_test_epoch_end(self) -> None:
        # Lightning would log these at its count of `training_step` calls (each runs many
        # optimizer steps); a logged "step" puts them on the optimizer-step axis that training uses.
        self.log("step", float(self.steps_done), add_dataloader_idx=False, sync_dist=True)
        results = self._layer_results()
        if results:
            self.layer_results = results
            for key in ("live_share", "input_share"):
                layers = {f"hidden/{key}/{i + 1:02d}": v for i, v in enumerate(results[key])}
                self.log_dict(layers, add_dataloader_idx=False, sync_dist=True)
        self.layer_activity.reset()
        self.test_results = {}
        for name, metric in self.test_scores.items():
            computed = metric.compute()
            self.test_results[name] = {key: float(value) for key, value in computed.items()}
            scores = {score_key(name, key): value for key, value in computed.items()}
            # The metric has already summed its states over processes, so every rank holds the
            # same values; sync_dist only says so to Lightning.
            self.log_dict(scores, add_dataloader_idx=False, sync_dist=True)
            metric.reset()


def unpack_train_batch(batch) -> tuple[torch.Tensor, bool | None, torch.Tensor | None]:
    """(images, minibatch, whole) of a training batch: the data module's dict
    (datamodules.single_example.train_batch), or a plain tensor of images from a loader of
    one's own (minibatch and whole unknown: None)."""
    if isinstance(batch, dict):
        return batch["images"], bool(batch["minibatch"]), batch.get("whole")
    return batch, None, None


def _resize_train_images(module: IdentityTaskModule, state_dict: dict, prefix: str, *_) -> None:
    """The training-image buffer is empty until training starts: take the shape of the state
    being loaded (a checkpoint, DDP spawn workers' weights, the initial weights swapped back)."""
    saved = state_dict.get(f"{prefix}train_images")
    if saved is not None:
        module.train_images = torch.empty_like(saved, device=module.train_images.device)


def _checkpoint_without_steps(module: IdentityTaskModule, state_dict: dict, prefix: str, *_):
    """Weights saved before `trained_steps` existed load with the count unknown (-1)."""
    state_dict.setdefault(f"{prefix}trained_steps", torch.tensor(-1))


def activation_module(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.Identity()


def linear_warmup(step: int, steps: int) -> float:
    """The learning-rate factor at `step` (0-based): (step + 1) / steps, then 1."""
    return min(1.0, (step + 1) / steps)
