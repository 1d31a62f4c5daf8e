"""Pure functions a run's report is made of: metrics from a confusion matrix, figures from arrays, the prediction
table. Nothing here imports Lightning."""
