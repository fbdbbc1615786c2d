"""Source edits that let whisper.cpp 1.8.5's Vulkan backend build against Debian 12's Vulkan headers.

pywhispercpp 1.5.1's sdist bundles whisper.cpp 1.8.5, whose ``ggml/src/ggml-vulkan`` already guards
most newer Vulkan features (``#if defined(VK_KHR_cooperative_matrix)``, ``VK_NV_cooperative_matrix2``,
``VK_EXT_shader_64bit_indexing``, its own fallback declarations for ``VK_KHR_shader_bfloat16`` and
``VK_NV_cooperative_matrix_decode_vector``), and CMake turns the optional shader features off when
``glslc`` lacks them (Debian 12's glslc 2023.2 lacks all five: GL_KHR_cooperative_matrix,
GL_NV_cooperative_matrix2, GL_NV_cooperative_matrix_decode_vector, GL_EXT_integer_dot_product,
GL_EXT_bfloat16). What is left against the 1.3.239 headers:

* ``ggml_vk_instance_init`` uses ``vk::LayerSettingEXT`` / ``vk::LayerSettingsCreateInfoEXT``
  (VK_EXT_layer_settings, headers 1.3.261+) unguarded; it only matters with
  ``GGML_VULKAN_VALIDATE`` (validation-layer settings), so without the extension the instance is
  created without that ``pNext``.
* with a glslc newer than the headers, ``GGML_VULKAN_COOPMAT(2)_GLSLC_SUPPORT`` would pull in
  ``VkPhysicalDeviceCooperativeMatrixFeaturesKHR`` and friends the headers do not declare; the
  optional cooperative-matrix paths are switched off when the headers lack the extension.
* CMake requires ``find_package(SPIRV-Headers CONFIG REQUIRED)`` but never links the target, so
  the headers are only found in the compiler's default include path; linking the imported target
  lets a SPIR-V headers prefix given through ``CMAKE_PREFIX_PATH`` work too. (Debian 12 has the
  package: ``apt-get install spirv-headers``.)

``patch_tree`` applies these as exact text edits and is idempotent; an anchor that is missing
(another whisper.cpp version) raises :class:`VulkanPatchError` before any file is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dvm.errors import DvmError

MARK = "dvm-vulkan-patch"
VK_DIR = "ggml/src/ggml-vulkan"


class VulkanPatchError(DvmError):
    """The source tree does not look like the whisper.cpp these edits were written for."""


@dataclass(frozen=True)
class Edit:
    path: str  # relative to the whisper.cpp directory
    name: str  # short tag, also written into the edited text so a second run recognises it
    description: str
    anchor: str  # exact text that must occur once
    replacement: str  # must contain f"{MARK}: {name}"

    @property
    def marker(self) -> str:
        return f"{MARK}: {self.name}"


_LAYER_SETTINGS_ANCHOR = """\
    VkBool32 enable_best_practice = layer_settings;
    std::vector<vk::LayerSettingEXT> settings = {
        {
            "VK_LAYER_KHRONOS_validation",
            "validate_best_practices",
            vk::LayerSettingTypeEXT::eBool32,
            1,
            &enable_best_practice
        },
    };
    vk::LayerSettingsCreateInfoEXT layer_setting_info(settings);
    vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions, &layer_setting_info);
"""

_LAYER_SETTINGS_REPLACEMENT = (
    f"#if defined(VK_EXT_layer_settings) // {MARK}: layer-settings\n"
    + _LAYER_SETTINGS_ANCHOR
    + """\
#else
    // the Vulkan headers predate VK_EXT_layer_settings (only used with GGML_VULKAN_VALIDATE)
    vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions);
#endif
"""
)

_HPP_ANCHOR = "#include <vulkan/vulkan.hpp>\n"

_COOPMAT_REPLACEMENT = (
    _HPP_ANCHOR
    + f"""\
// {MARK}: coopmat-headers
// glslc may know the cooperative-matrix GLSL extensions while the Vulkan headers do not declare
// them (Debian 12: 1.3.239); the optional cooperative-matrix paths are then left out.
#if !defined(VK_KHR_cooperative_matrix)
#undef GGML_VULKAN_COOPMAT_GLSLC_SUPPORT
#endif
#if !defined(VK_NV_cooperative_matrix2)
#undef GGML_VULKAN_COOPMAT2_GLSLC_SUPPORT
#undef GGML_VULKAN_COOPMAT2_DECODE_VECTOR_GLSLC_SUPPORT
#endif
"""
)

_LINK_ANCHOR = "    target_link_libraries(ggml-vulkan PRIVATE Vulkan::Vulkan)\n"

_LINK_REPLACEMENT = (
    f"    # {MARK}: spirv-headers-target\n"
    "    target_link_libraries(ggml-vulkan PRIVATE Vulkan::Vulkan SPIRV-Headers::SPIRV-Headers)\n"
)

EDITS: tuple[Edit, ...] = (
    Edit(
        path=f"{VK_DIR}/ggml-vulkan.cpp",
        name="layer-settings",
        description="ggml-vulkan.cpp: guard the VK_EXT_layer_settings instance setup (vk::LayerSettingEXT, "
        "vk::LayerSettingsCreateInfoEXT; headers 1.3.261+) with #if defined(VK_EXT_layer_settings)",
        anchor=_LAYER_SETTINGS_ANCHOR,
        replacement=_LAYER_SETTINGS_REPLACEMENT,
    ),
    Edit(
        path=f"{VK_DIR}/ggml-vulkan.cpp",
        name="coopmat-headers",
        description="ggml-vulkan.cpp: #undef GGML_VULKAN_COOPMAT_GLSLC_SUPPORT unless the headers declare "
        "VK_KHR_cooperative_matrix, and the COOPMAT2 ones unless they declare VK_NV_cooperative_matrix2",
        anchor=_HPP_ANCHOR,
        replacement=_COOPMAT_REPLACEMENT,
    ),
    Edit(
        path=f"{VK_DIR}/CMakeLists.txt",
        name="spirv-headers-target",
        description="ggml-vulkan/CMakeLists.txt: link SPIRV-Headers::SPIRV-Headers so a SPIR-V headers prefix "
        "from CMAKE_PREFIX_PATH reaches the compiler",
        anchor=_LINK_ANCHOR,
        replacement=_LINK_REPLACEMENT,
    ),
)


def whisper_cpp_root(path: Path) -> Path:
    """The whisper.cpp directory, given it or the pywhispercpp sdist directory that contains it."""
    path = Path(path)
    if (path / VK_DIR).is_dir():
        return path
    if (path / "whisper.cpp" / VK_DIR).is_dir():
        return path / "whisper.cpp"
    raise VulkanPatchError(f"{path} is not a whisper.cpp source tree (no {VK_DIR})")


def patch_text(text: str, edits: list[Edit] | tuple[Edit, ...], where: str = "<text>") -> tuple[str, list[str]]:
    """Apply ``edits`` to one file's text; returns the new text and a line per edit."""
    notes = []
    for edit in edits:
        if edit.marker in text:
            notes.append(f"{edit.description} (already applied)")
            continue
        count = text.count(edit.anchor)
        if count != 1:
            first = edit.anchor.strip().splitlines()[0].strip()
            found = "not found" if count == 0 else f"found {count} times"
            raise VulkanPatchError(
                f"Vulkan source patch {edit.name!r}: anchor {first!r} {found} in {where}; "
                "this whisper.cpp version needs its edits reviewed (dvm/harness/vulkan_patch.py)"
            )
        text = text.replace(edit.anchor, edit.replacement, 1)
        notes.append(edit.description)
    return text, notes


def patch_tree(whisper_cpp_dir: Path) -> list[str]:
    """Edit whisper.cpp's ggml-vulkan sources in place so they compile against Vulkan headers 1.3.239.

    Accepts the whisper.cpp directory or the pywhispercpp sdist directory holding it. Idempotent: a
    second run changes nothing and reports each edit as already applied. Every anchor is checked
    before any file is written, so a tree it does not fit is left untouched.
    """
    root = whisper_cpp_root(whisper_cpp_dir)
    by_file: dict[str, list[Edit]] = {}
    for edit in EDITS:
        by_file.setdefault(edit.path, []).append(edit)
    results: list[tuple[Path, str, str]] = []
    notes: list[str] = []
    for rel, edits in by_file.items():
        path = root / rel
        if not path.is_file():
            raise VulkanPatchError(f"Vulkan source patch: {rel} is missing under {root}")
        old = path.read_text(encoding="utf-8")
        new, file_notes = patch_text(old, edits, where=rel)
        results.append((path, old, new))
        notes += file_notes
    for path, old, new in results:
        if new != old:
            path.write_text(new, encoding="utf-8")
    return notes


def extract_patched_sdist(archive: Path, workdir: Path) -> tuple[Path, list[str]]:
    """Unpack a pywhispercpp sdist tarball into ``workdir`` and patch it; returns (sdist dir, edits)."""
    from dvm.harness.variants.sdist import unpack  # noqa: PLC0415 - sdist imports platformdirs; patching alone needs none

    try:
        sdist_dir = unpack(archive, Path(workdir))
    except DvmError as exc:
        raise VulkanPatchError(str(exc)) from None
    return sdist_dir, patch_tree(sdist_dir)
