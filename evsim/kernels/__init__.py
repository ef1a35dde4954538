"""Array-in, array-out kernels: the cell maths, NumPy reference, Numba CPU and CUDA."""
