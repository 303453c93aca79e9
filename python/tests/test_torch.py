"""The state_dict in PyTorch itself, where PyTorch is installed (the suite does not need it: test_model.py checks
the names, shapes and values without it). The module is the tutorial's, as tests/fixtures/generate.py has it."""

import numpy as np
import pytest

import lenet5
from conftest import REPO

torch = pytest.importorskip("torch")
nn = torch.nn


class LeNet5(nn.Module):
    def __init__(self, head="sigmoid", classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.linear1 = nn.Linear(400, 120)
        self.linear2 = nn.Linear(120, 84)
        self.output = nn.Linear(84, classes)
        self.head = head

    def forward(self, x):
        pool, relu = nn.functional.avg_pool2d, torch.relu
        x = pool(relu(self.conv1(x)), 2)
        x = pool(relu(self.conv2(x)), 2).flatten(1)
        x = self.output(relu(self.linear2(relu(self.linear1(x)))))
        return torch.sigmoid(x) if self.head == "sigmoid" else x


def test_the_state_dict_loads_into_pytorch_and_back(test_images):
    images = (test_images[0][:500] / np.float32(255)).astype(np.float32)[:, None]
    model = lenet5.Model.load(REPO / "models" / "lenet5-mnist.safetensors")
    net = LeNet5()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=True)
    with torch.no_grad():
        theirs = net(torch.from_numpy(images)).numpy()
    assert np.abs(theirs - model.scores(images)).max() < 1e-5

    torch.manual_seed(3)
    fresh = LeNet5(head="logits", classes=26)
    back = lenet5.Model.from_state_dict({k: v.numpy() for k, v in fresh.state_dict().items()}, head="logits")
    with torch.no_grad():
        theirs = fresh(torch.from_numpy(images)).numpy()
    assert back.num_classes == 26
    assert np.abs(theirs - back.scores(images)).max() < 1e-4

