"""The Trainer options every command of the project trains with (fit, theory, the benchmarks and
the tests that build a Trainer by hand), so all of them measure the same thing."""

import sys

# One image per step: checkpoints, model summaries and sanity checks cost more than the work, so
# they are off unless asked for; the progress bar only shows on a terminal, not in sweep logs.
TRAINER_DEFAULTS = {
    "max_steps": 1500,
    "enable_checkpointing": False,
    "enable_model_summary": False,
    "enable_progress_bar": sys.stderr.isatty(),
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 50,
    "devices": 1,
    # Training is one endless epoch of the same image. Lightning reads min_steps as also needing
    # one whole epoch, which never ends, so a stop (stop_loss) would never be honoured.
    "min_epochs": 0,
    # The data module shards its own test sets over DDP ranks without repeats (a sampler's
    # padding would count some images twice); the training stream is not a sampled data set.
    "use_distributed_sampler": False,
}
