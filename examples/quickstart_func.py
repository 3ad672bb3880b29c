"""The quickstart's train function, for `rafter run examples/quickstart.yaml`.

Importing this file only defines the function; the job file says how to run it.
"""

import torch
import torch.nn as nn
import torch.optim as optim

from rafter import train


def train_func(config):
    # rafter handles the device placement: no manual cuda:0 vs cuda:1
    model = nn.Linear(1, 1)
    model = train.torch.prepare_model(model)
    optimizer = optim.SGD(model.parameters(), lr=config.get("lr", 1e-3))
    # Fake data loop just to prove the point
    for _ in range(config.get("steps", 10)):
        loss = torch.randn(1, requires_grad=True).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # Reporting metrics back to the driver
        train.report({"loss": loss.item()})
