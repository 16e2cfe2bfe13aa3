"""Resuming a run so that it ends where the uninterrupted run would have ended.

A run is resumed from its newest state on disk: the epoch checkpoint (`checkpoints/`,
after every epoch) or the fault-tolerance backup (`backup/`, every `--backup_every` steps).
Both hold the model, its optimizers and a `TrainingState`: the finished epoch count and
early stopping's best `val_auc_mean`, its epoch and the patience counter. So a restarted
run stops at the same epoch and restores the same best weights as one that was never
killed (Keras' EarlyStopping starts over on every `fit`). The best weights are read back
from that epoch's checkpoint instead of being copied in memory.

A run that finished (trained, evaluated, exported) writes `finished.json`; training the
same model_dir again is then a no-op that says so, unless --force_retrain starts it over.
"""
from __future__ import annotations

import json
import os
import shutil

import mdl_tf  # noqa: F401
import tensorflow as tf

STATE_ATTR = "training_state"   # the model attribute: checkpointed with the model
FINISHED = "finished.json"      # under model_dir
MONITOR = "val_auc_mean"
# What --force_retrain removes: the training state. Exports and logs stay (versions are
# immutable; the next export gets a new number).
RESTART_PATHS = ("checkpoints", "backup", ".workers", FINISHED)


class TrainingState(tf.train.Checkpoint):
    """Scalars that decide where a run ends; variables, so checkpoints carry them. (A
    Checkpoint rather than a tf.Module: Keras would count a Module's variables among the
    model's weights, to be trained and exported.)"""

    def __init__(self):
        def scalar(value, dtype, name):
            return tf.Variable(value, dtype=dtype, trainable=False, name=name)
        super().__init__(
            epochs_done=scalar(0, tf.int64, "epoch"),
            best=scalar(float("-inf"), tf.float64, "best"),
            best_epoch=scalar(-1, tf.int64, "best_epoch"),       # 0-based; -1: none yet
            wait=scalar(0, tf.int64, "wait"),
            stopped=scalar(False, tf.bool, "stopped"),          # by early stopping
            best_restored=scalar(False, tf.bool, "best_restored"))


def attach_state(model) -> TrainingState:
    """The model's TrainingState, created on first use. As a model attribute it is in every
    checkpoint of the model (BackupAndRestore's too) but not in `model.variables`, so
    exports and weight lists do not change."""
    if not hasattr(model, STATE_ATTR):
        setattr(model, STATE_ATTR, TrainingState())
    return getattr(model, STATE_ATTR)


class ResumableEarlyStopping(tf.keras.callbacks.EarlyStopping):
    """EarlyStopping on val_auc_mean (max) that continues from the TrainingState restored
    with the model instead of starting over; best weights: see restore_best_weights."""

    def __init__(self, state: TrainingState, patience: int, verbose: int = 0):
        super().__init__(MONITOR, mode="max", patience=patience, verbose=verbose)
        self.state = state

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best = float(self.state.best.numpy())
        self.best_epoch = int(self.state.best_epoch.numpy())
        self.wait = int(self.state.wait.numpy())

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.state.best.assign(self.best)
        self.state.best_epoch.assign(self.best_epoch if self.best > float("-inf") else -1)
        self.state.wait.assign(self.wait)
        self.state.stopped.assign(self.stopped_epoch == epoch > 0)
        self.state.best_restored.assign(False)


class BackupAfterEpochEnd(tf.keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose epoch-end backup is taken after every other callback's epoch
    end (validation, early stopping, the epoch checkpoint): call `after_epoch_end()` for
    the callback that does it, and put that last.

    Keras backs up an epoch's last batch (or, with save_freq="epoch", the epoch end) before
    those callbacks run, and resumes from such a backup with the next epoch: the restarted
    run would skip one epoch's validation, early-stopping step and checkpoint.
    """

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 != self.params.get("steps"):   # the epoch end backs the last one up
            super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        pass

    def after_epoch_end(self):
        return tf.keras.callbacks.LambdaCallback(on_epoch_end=self._backup_epoch)

    def _backup_epoch(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._backup(epoch=epoch)
        elif self.params.get("steps"):
            # The last batch of the epoch: Keras resumes such a backup with the next epoch.
            self._backup(epoch=epoch, batch=self.params["steps"] - 1)
            self._batches_count = 0


def restore_best_weights(model, checkpoint_dir) -> bool:
    """Loads the model weights (not its optimizers' state or step count, as Keras'
    restore_best_weights) of the best epoch from its checkpoint `ckpt-<epoch>`; True if
    the weights changed. False when the model already holds them or no epoch was scored."""
    state = attach_state(model)
    best = int(state.best_epoch.numpy()) + 1            # checkpoint number = epochs done
    if best <= 0 or bool(state.best_restored.numpy()) or best == int(
            state.epochs_done.numpy()):
        return False
    path = os.path.join(checkpoint_dir, f"ckpt-{best}")
    if not tf.io.gfile.exists(path + ".index"):
        print(f"warning: the best epoch's checkpoint {path} is gone; keeping the last "
              "epoch's weights", flush=True)
        return False
    children = {name: child for name, child in model._trackable_children(
        save_type="checkpoint").items() if "optimizer" not in name and name != STATE_ATTR}
    tf.train.Checkpoint(model=tf.train.Checkpoint(**children)).read(path).expect_partial()
    state.best_restored.assign(True)
    print(f"restored the weights of the best epoch ({best}, {MONITOR} "
          f"{float(state.best.numpy()):.5f})", flush=True)
    return True


# --- finished runs -----------------------------------------------------------------------
def mark_finished(model_dir, model, export_path):
    """Records that the run in model_dir finished (after its evaluation and export)."""
    state = attach_state(model)
    info = {"step": int(model.optimizer.iterations.numpy()),
            "epochs": int(state.epochs_done.numpy()),
            "stopped_early": bool(state.stopped.numpy()), "export_path": export_path}
    tmp = os.path.join(model_dir, FINISHED + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(info, fh, indent=2)
    os.replace(tmp, os.path.join(model_dir, FINISHED))


def finished_run(model_dir, epochs) -> dict | None:
    """finished.json's content if the run in model_dir finished and `epochs` epochs ask for
    no more training (early stopping ended it, or it has done that many); else None."""
    path = os.path.join(model_dir, FINISHED)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        info = json.load(fh)
    return info if info["stopped_early"] or info["epochs"] >= epochs else None


def already_trained_message(model_dir, info) -> str:
    how = "stopped early" if info["stopped_early"] else "all epochs done"
    return (f"already trained: {model_dir} finished at step {info['step']} (epoch "
            f"{info['epochs']}, {how}; export {info['export_path']}); nothing to do. "
            "Pass --force_retrain to train it again from scratch.")


def start_over(model_dir):
    """--force_retrain: removes the run's training state (see RESTART_PATHS)."""
    for name in RESTART_PATHS:
        path = os.path.join(model_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
