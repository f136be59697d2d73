"""Try cl-lsp on this file: the body of the loop is missing.

    cl-lsp complete examples/fib.py --line 10 --character 8
"""


def fib(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        
    return a


if __name__ == "__main__":
    print([fib(i) for i in range(10)])
