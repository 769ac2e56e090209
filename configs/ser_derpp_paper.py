"""DER++ + SER with the paper's settings (docs/ser.md: the README command).

Paper: Split FG-ImageNet / Split Mini-ImageNet, 20 tasks x 5 classes, 288x384
inputs, no augmentation, one epoch, batch 8, minibatch 8, buffer 2000
(also 1000 / 5000), lr 0.01 (plain SGD), alpha 0.1, beta 0.5, ResNet-18
(nf 64), modulation 'multiply' on all five blocks, saliency SGD lr 0.005
(encoder x0.1), momentum 0.9, weight decay 1e-4 / 1e-5, sal_coeff 1, no
Gaussian priors, saliency net from the official checkpoint.

Data: Split Mini-ImageNet as SER lays it out (``images/`` + ``annotations/``),
prepared once with SER's label map, 288x384 Lanczos (docs/data.md)::

    python -m clj.data.prepare mini_imagenet --source <seqMINIIMG dir> \
        --classes <SER's data/seq_miniimg.yml> --data_dir <data_dir>

then ``--config.data_dir=<data_dir>``; without it the run stops with one line
naming that command.  ``--config.dataset=fg_imagenet`` runs Split
FG-ImageNet (``python -m clj.data.prepare fg_imagenet ... --classes
<SER's data/seq_imagenet_FG.yml>``).  The records hold SER's saliency map
of every image; the loop gathers each batch's maps with its images and the
saliency branch trains on them (``ser.sal_target='dataset'``, the paper's
target).  Its starting weights: ``pretrain:2000`` steps on procedural images
here, or the official checkpoint converted to ``.npz``
(``--config.ser.sal_init=ckpt:/path/sal.npz``, the paper's).
``data.placement=auto`` streams the
records when they would not fit the device comfortably (``stream`` forces
it).  Meant for a GPU; on CPU it takes days.
"""
from clj.config import base_config
from clj.methods.sections import section_config


def get_config():
    c = base_config()
    c.method = "ser_derpp"
    c.dataset = "mini_imagenet"
    c.scenario.kind = "class_il"
    c.scenario.increment = 5
    c.model = dict(name="resnet18", width=64, dtype="float32")
    c.optim.lr = 0.01
    c.train.epochs = 1
    c.train.batch_size = 8
    c.replay.buffer_size = 2000
    c.replay.minibatch_size = 8
    c.replay.alpha = 0.1
    c.replay.beta = 0.5
    c.loop.eval_batch_size = 500
    c.ser = section_config("ser")
    c.ser.mnp_blocks = (1, 1, 1, 1, 1)
    c.ser.sal_lr = 0.005
    c.ser.sal_coeff = 1.0
    c.ser.sal_n_gaussians = 0
    c.ser.sal_target = "dataset"  # the ground-truth maps stored with the images
    c.ser.sal_init = "pretrain:2000"
    return c
