"""Custom operators, sensors and extra links of taxi-mlops."""
