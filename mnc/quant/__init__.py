"""int8 post-training quantisation: calibration data, activation ranges, the scheme."""
