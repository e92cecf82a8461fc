"""ament_python packaging: the version is read from package.xml so there is one version string."""

import re
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dynofa_ros"

with open("package.xml", encoding="utf-8") as f:
    VERSION = re.search(r"<version>([^<]+)</version>", f.read()).group(1)

setup(
    name=PACKAGE,
    version=VERSION,
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["data/*", "data/*/*", "data/*/*/*/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/families", glob("config/families/*.json")),
        (f"share/{PACKAGE}/config/scenarios", glob("config/scenarios/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="dynofa_ros maintainers",
    maintainer_email="dynofa-maintainers@example.com",
    description="Dynamic-OFA runtime DNN switching and DVFS for ROS 2",
    license="MIT",
    entry_points={
        "console_scripts": [
            f"perception_node = {PACKAGE}.nodes.perception_node:main",
            f"perception_lifecycle_node = {PACKAGE}.nodes.perception_lifecycle_node:main",
            f"manager_node = {PACKAGE}.nodes.manager_node:main",
            f"dvfs_node = {PACKAGE}.nodes.dvfs_node:main",
            f"monitor_node = {PACKAGE}.nodes.monitor_node:main",
            f"dynofa-profile = {PACKAGE}.tools.profile:main",
            f"dynofa-export = {PACKAGE}.tools.export:main",
            f"dynofa-build-family = {PACKAGE}.tools.build_family:main",
            f"dynofa-make-scenario-bag = {PACKAGE}.tools.make_scenario_bag:main",
            f"dynofa-replay = {PACKAGE}.tools.replay:main",
            f"dynofa-record = {PACKAGE}.tools.record:main",
            f"dynofa-report = {PACKAGE}.tools.report:main",
        ],
    },
)
