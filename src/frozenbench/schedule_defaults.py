"""The default schedule lengths of head training and pretraining, in a module of their own.

``engine.options.TrainOptions`` and ``pretrain.train.PRETRAIN_SCHEDULE`` take their defaults from here,
and the config check (``config.schedule_problems``) compares a config's warmup against them
without importing the training code: every DVC stage reads the config, and a stage depends on the
code it imports (``tests/test_dvc_stages.py``), so the data stage must not depend on the engine.
"""

TRAIN_STEPS = 200
TRAIN_WARMUP_STEPS = 20
PRETRAIN_STEPS = 600
PRETRAIN_WARMUP_STEPS = 100
PRETRAIN_BATCH = 128  # the global batch of a pretraining step (the config check splits it without the engine)

# (steps, warmup_steps) by the config section they default
HEADS = (TRAIN_STEPS, TRAIN_WARMUP_STEPS)
PRETRAINING = (PRETRAIN_STEPS, PRETRAIN_WARMUP_STEPS)
