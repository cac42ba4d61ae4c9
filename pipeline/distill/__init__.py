"""Distillation from a teacher (ARWKV / RADLADS): the teacher, the per-phase losses, chunked KL."""
