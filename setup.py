"""The project as an installable package: `pip install -e .` gives TFX dotted module paths
(`transform_module.preprocessing_fn`) and the `fraudctl` command; Beam workers install it with
`--setup_file=./setup.py`. Dependencies are pinned in requirements/lock.txt (installed by `make`)."""
from setuptools import find_packages, setup

setup(
    name="fraud-detection-peru",
    version="0.1.0",
    description="TFX fraud detection for luxury restaurants in Peru",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["fraud", "fraud.*", "fraudctl", "fraudctl.*", "pipeline", "pipeline.*", "components",
                                    "components.*", "serving", "serving.*", "decision", "decision.*"]),
    py_modules=["transform_module", "trainer_module"],
    package_data={"": ["*.pbtxt", "*.config"]},
    install_requires=[],  # pinned in requirements/lock.txt; kept empty so Beam workers reuse their stack
    entry_points={"console_scripts": ["fraudctl=fraudctl.main:main"]},
)
