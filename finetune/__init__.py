"""Fine-tune an ImageNet-pretrained ResNet on an ImageFolder (the d2l hotdog recipe), fed by gpuaug.

Run ``python -m finetune --help``. The pieces: ``config`` (one frozen dataclass, mirrored by the
command line), ``model`` (the network, its new head, the learning-rate groups), ``train`` (the
loop, read top to bottom) and ``demo`` (the built-in cat / not-cat data set).
"""
