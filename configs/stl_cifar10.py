"""STL on Split CIFAR-10, task-IL, 5 tasks of 2 classes (NISPA's table
setting): NISPA's ConvNet per task, first conv dense, 10 % density elsewhere
(the authors' prune 90), Adam lr 0.001, batch 256 training examples, 40
epochs, CIFAR normalisation, no augmentation.  Seeds 0, 19, 42, 2022, 31415.
Needs the TFDS cifar10 files; a GPU run."""
import ml_collections

from clj.configs.stl_digits import stl_config

SEEDS = (0, 19, 42, 2022, 31415)


def cifar_stl(dataset: str, variant: str, increment: int, batch: int):
    """STL on a CIFAR dataset with NISPA's ConvNet (10 % density, first conv
    dense), Adam lr 0.001, 40 epochs; ``batch`` training examples per step."""
    c = stl_config(dataset, variant, density=0.1, dense_first_conv=True)
    c.model = ml_collections.ConfigDict(dict(name="nispa_conv", dtype="float32", channels=(64, 64, 128, 128),
                                             fc_width=1024))
    c.scenario.increment = increment
    c.optim.lr = 0.001
    c.augment.normalize = True
    c.train.epochs = 40
    c.train.batch_size = -(-batch * 10 // 9)   # ~batch training examples per step (10 % hold-out)
    return c


def get_config():
    return cifar_stl("cifar10", "stl", 2, 256)
