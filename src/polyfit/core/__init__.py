"""The maths: the data, the model, the training loop and the scores. torch only: no MLflow,
DVC or files, except the data readers'."""
