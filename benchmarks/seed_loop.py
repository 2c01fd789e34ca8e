"""The seed script (PyTorch tutorial polynomial_optim), unchanged apart from the timing.

Run as a script it is the seed itself, and prints `seed_seconds <s>` last: the time from just
after `import torch` to the end, i.e. making the data, the model, RMSprop (whose first
add_param_group imports torch._dynamo) and the 2000 steps. `seed_loop` is its loop, imported
by the training-loop benchmark.
"""

import time

import torch


def seed_model_and_optimizer(learning_rate: float = 1e-3):
    """The seed's model and RMSprop, exactly as it builds them."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0, 1))
    return model, torch.optim.RMSprop(model.parameters(), lr=learning_rate)


def seed_loop(model, xx, y, optimizer, steps: int = 2000, report=print) -> None:
    """The seed's loop, line for line; `report` is where it prints every 100 steps."""
    loss_fn = torch.nn.MSELoss(reduction="sum")
    for t in range(steps):
        y_pred = model(xx)
        loss = loss_fn(y_pred, y)
        if t % 100 == 99:
            report(t, loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main() -> None:
    import math

    started = time.perf_counter()
    x = torch.linspace(-math.pi, math.pi, 2000)
    y = torch.sin(x)
    p = torch.tensor([1, 2, 3])
    xx = x.unsqueeze(-1).pow(p)
    model, optimizer = seed_model_and_optimizer()
    seed_loop(model, xx, y, optimizer)
    linear_layer = model[0]
    print(
        f"Result: y = {linear_layer.bias.item()} + {linear_layer.weight[:, 0].item()} x"
        f" + {linear_layer.weight[:, 1].item()} x^2 + {linear_layer.weight[:, 2].item()} x^3"
    )
    print(f"seed_seconds {time.perf_counter() - started:.6f}")


if __name__ == "__main__":
    main()
