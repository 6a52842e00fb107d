"""The bundled MNIST digits and their partitioning across clients."""
