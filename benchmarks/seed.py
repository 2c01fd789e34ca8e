"""The seed: the PyTorch tutorial "polynomial_optim", line for line, plus two clocks.

It prints `seed_seconds S` (from just after `import torch` to its end: data, model, RMSprop with
its torch._dynamo import, 2000 steps) and `us_per_step U` (its first step to its last, / 2000).
With --recompute-powers, the loop computes `x.unsqueeze(-1).pow(p)` at every step: what a model
costs that does not keep its powers (core/model.py keeps them).
"""

import math
import sys
import time

import torch

started = time.perf_counter()
recompute = "--recompute-powers" in sys.argv

x = torch.linspace(-math.pi, math.pi, 2000)
y = torch.sin(x)
p = torch.tensor([1, 2, 3])
xx = x.unsqueeze(-1).pow(p)

model = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0, 1))
loss_fn = torch.nn.MSELoss(reduction="sum")

learning_rate = 1e-3
optimizer = torch.optim.RMSprop(model.parameters(), lr=learning_rate)
first_step = time.perf_counter()
for t in range(2000):
    if recompute:
        xx = x.unsqueeze(-1).pow(p)
    y_pred = model(xx)
    loss = loss_fn(y_pred, y)
    if t % 100 == 99:
        print(t, loss.item())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
loop_seconds = time.perf_counter() - first_step

linear_layer = model[0]
print(
    f"Result: y = {linear_layer.bias.item()} + {linear_layer.weight[:, 0].item()} x"
    f" + {linear_layer.weight[:, 1].item()} x^2 + {linear_layer.weight[:, 2].item()} x^3"
)
print(f"us_per_step {1e6 * loop_seconds / 2000:.3f}")
print(f"seed_seconds {time.perf_counter() - started:.6f}")
