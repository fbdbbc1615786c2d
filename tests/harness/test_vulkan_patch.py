"""Vulkan source patch: exact edits on small stand-ins for whisper.cpp's ggml-vulkan files."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from dvm.harness.variants import vulkan_patch as vp
from dvm.errors import DvmError

CPP = (
    '#include "ggml-vulkan.h"\n'
    "#define VULKAN_HPP_DISPATCH_LOADER_DYNAMIC 1\n"
    "#include <vulkan/vulkan.hpp>\n"
    "\n"
    "static void ggml_vk_instance_init() {\n"
    "    std::vector<const char*> extensions;\n"
    + vp._LAYER_SETTINGS_ANCHOR
    + "    vk_instance.instance = vk::createInstance(instance_create_info);\n"
    "}\n"
)
CMAKE = (
    "if (Vulkan_FOUND)\n"
    "    find_package(SPIRV-Headers CONFIG REQUIRED)\n"
    "    target_link_libraries(ggml-vulkan PRIVATE Vulkan::Vulkan)\n"
    "    target_include_directories(ggml-vulkan PRIVATE ${CMAKE_CURRENT_BINARY_DIR})\n"
    "endif()\n"
)


def make_tree(root: Path, cpp: str = CPP, cmake: str = CMAKE) -> Path:
    vk = root / "whisper.cpp" / vp.VK_DIR
    vk.mkdir(parents=True)
    (vk / "ggml-vulkan.cpp").write_text(cpp)
    (vk / "CMakeLists.txt").write_text(cmake)
    return root / "whisper.cpp"


def test_patch_tree_applies_each_edit_once(tmp_path):
    tree = make_tree(tmp_path)
    notes = vp.patch_tree(tree)
    assert len(notes) == len(vp.EDITS) == 3
    assert not any("already" in n for n in notes)
    cpp = (tree / vp.VK_DIR / "ggml-vulkan.cpp").read_text()
    cmake = (tree / vp.VK_DIR / "CMakeLists.txt").read_text()

    # layer settings: the original block survives under the guard, the #else creates the instance without pNext
    guard = cpp.index("#if defined(VK_EXT_layer_settings)")
    assert guard < cpp.index("vk::LayerSettingsCreateInfoEXT layer_setting_info(settings);") < cpp.index("#else")
    assert "instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions);\n#endif" in cpp
    assert cpp.count("vk::InstanceCreateInfo instance_create_info(") == 2

    # coopmat: undefs right after vulkan.hpp (before the file's own bf16 fallback could define anything)
    after = cpp.split("#include <vulkan/vulkan.hpp>\n", 1)[1]
    assert after.index("#if !defined(VK_KHR_cooperative_matrix)\n#undef GGML_VULKAN_COOPMAT_GLSLC_SUPPORT") < 400
    assert "#undef GGML_VULKAN_COOPMAT2_DECODE_VECTOR_GLSLC_SUPPORT" in after

    assert "target_link_libraries(ggml-vulkan PRIVATE Vulkan::Vulkan SPIRV-Headers::SPIRV-Headers)" in cmake
    assert "PRIVATE Vulkan::Vulkan)\n" not in cmake


def test_patch_tree_is_idempotent(tmp_path):
    tree = make_tree(tmp_path)
    vp.patch_tree(tree)
    first = {p.name: p.read_text() for p in (tree / vp.VK_DIR).iterdir()}
    again = vp.patch_tree(tree)
    assert all(n.endswith("(already applied)") for n in again) and len(again) == 3
    assert {p.name: p.read_text() for p in (tree / vp.VK_DIR).iterdir()} == first


def test_patch_tree_accepts_the_sdist_directory(tmp_path):
    make_tree(tmp_path)
    assert len(vp.patch_tree(tmp_path)) == 3  # tmp_path holds whisper.cpp/, as the sdist does


def test_missing_anchor_fails_loudly_and_writes_nothing(tmp_path):
    changed = CPP.replace("vk::LayerSettingsCreateInfoEXT layer_setting_info(settings);", "auto info = make_info();")
    tree = make_tree(tmp_path, cpp=changed)
    with pytest.raises(vp.VulkanPatchError, match="layer-settings.*not found.*ggml-vulkan.cpp") as err:
        vp.patch_tree(tree)
    assert isinstance(err.value, DvmError)
    assert (tree / vp.VK_DIR / "ggml-vulkan.cpp").read_text() == changed
    assert (tree / vp.VK_DIR / "CMakeLists.txt").read_text() == CMAKE


def test_ambiguous_anchor_fails(tmp_path):
    tree = make_tree(tmp_path, cmake=CMAKE + CMAKE)
    with pytest.raises(vp.VulkanPatchError, match="found 2 times"):
        vp.patch_tree(tree)


def test_not_a_source_tree(tmp_path):
    with pytest.raises(vp.VulkanPatchError, match="not a whisper.cpp source tree"):
        vp.patch_tree(tmp_path)
    (tmp_path / "whisper.cpp" / vp.VK_DIR).mkdir(parents=True)
    with pytest.raises(vp.VulkanPatchError, match="ggml-vulkan.cpp is missing"):
        vp.patch_tree(tmp_path)


def test_every_edit_carries_its_marker():
    for edit in vp.EDITS:
        assert edit.marker in edit.replacement and edit.marker not in edit.anchor
        if edit.name != "spirv-headers-target":  # guards and insertions keep the original text whole
            assert edit.anchor in edit.replacement


def test_extract_patched_sdist(tmp_path):
    src = tmp_path / "src" / "pywhispercpp-9.9.9"
    make_tree(src)
    archive = tmp_path / "pywhispercpp-9.9.9.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="pywhispercpp-9.9.9")
    sdist_dir, notes = vp.extract_patched_sdist(archive, tmp_path / "work")
    assert sdist_dir == tmp_path / "work" / "pywhispercpp-9.9.9"
    assert len(notes) == 3
    assert "SPIRV-Headers::SPIRV-Headers" in (sdist_dir / "whisper.cpp" / vp.VK_DIR / "CMakeLists.txt").read_text()


def test_extract_refuses_two_top_directories(tmp_path):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("a/x", "b/y"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(vp.VulkanPatchError, match="one top directory"):
        vp.extract_patched_sdist(archive, tmp_path / "work")


def test_real_sdist_if_cached(tmp_path):
    """The edits' anchors match the pywhispercpp 1.5.1 sdist when it is already on this machine."""
    from dvm.harness.variants import sdist

    archive = sdist.cache_dir() / "sdist" / f"{sdist.PACKAGE}-{sdist.VERSION}.tar.gz"
    if not archive.exists():
        pytest.skip("pywhispercpp sdist not cached")
    with tarfile.open(archive) as tar:
        prefix = f"{sdist.PACKAGE}-{sdist.VERSION}/whisper.cpp/{vp.VK_DIR}/"
        for name in ("ggml-vulkan.cpp", "CMakeLists.txt"):
            data = tar.extractfile(prefix + name).read()
            out = tmp_path / "whisper.cpp" / vp.VK_DIR / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
    notes = vp.patch_tree(tmp_path)
    assert len(notes) == 3 and not any("already" in n for n in notes)
