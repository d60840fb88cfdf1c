"""Training: the loop shared by finetune/distill, checkpoints, students, trainable weights."""
