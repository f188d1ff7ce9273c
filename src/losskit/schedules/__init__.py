"""Schedules: how the same math is executed (dense, chunked, distributed), shared by the families."""
