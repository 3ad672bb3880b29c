"""Local stand-ins for the torchvision pieces of Ray's Lightning getting-started example.

torchvision is not a rafter dependency (and its PyPI wheels need a CUDA build of torch), so:
- ``resnet18(num_classes)``: a small CNN with the same entry point (``.conv1``, which the example replaces
  with a 1-channel convolution of 64 filters) and ``num_classes`` outputs;
- ``FashionMNIST(root, train, download, transform)``: 256 random 28x28 grayscale images with labels
  (nothing is downloaded; the label sets the mean brightness, so there is something to learn);
- ``Compose``, ``ToTensor``, ``Normalize``: what the example uses of them.
"""

import torch


class _SmallResNet(torch.nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.head = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                        torch.nn.Linear(64, num_classes))

    def forward(self, x):
        return self.head(self.conv1(x))


def resnet18(num_classes=1000):
    return _SmallResNet(num_classes)


class FashionMNIST(torch.utils.data.Dataset):
    def __init__(self, root, train=True, download=False, transform=None):
        g = torch.Generator().manual_seed(0 if train else 1)
        self.labels = torch.randint(0, 10, (256,), generator=g)
        noise = torch.randint(0, 128, (256, 28, 28), generator=g)
        self.images = (noise + self.labels.view(-1, 1, 1) * 12).to(torch.uint8)
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = self.images[i]
        return (self.transform(image) if self.transform else image), int(self.labels[i])


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class ToTensor:
    def __call__(self, image):
        return image.to(torch.float32).unsqueeze(0) / 255.0


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __call__(self, x):
        return (x - self.mean) / self.std
