//! The global allocator: mimalloc, called the way its fast path expects.
//!
//! The `mimalloc` crate hands every Rust allocation to `mi_malloc_aligned`.
//! mimalloc 3 serves that from its fast path only for blocks up to 1 KiB
//! with a free block at hand; otherwise it takes a generic path which, for
//! a rounded size that is not a power of two (most of them), allocates
//! `size + alignment` and returns an aligned pointer inside it: more
//! instructions and a larger block. A cached `me` made about 16 such calls
//! (bench/RESULTS.md). mimalloc's plain calls already return blocks
//! aligned to 16 bytes (8 for blocks of 8 bytes or less), so a layout
//! whose alignment is at most 16 and at most its size takes the plain
//! call, as Rust's own `System` allocator does with `malloc`; any other
//! layout keeps the aligned call.
//!
//! That guarantee is mimalloc's as a C `malloc` (`MI_MAX_ALIGN_SIZE`, its
//! size classes rounded to 16 bytes on 64-bit targets), in the build
//! Cargo.toml asks for: its `debug` feature would allow guard pages that
//! place blocks off it. The tests below check it over every kind of
//! block; run them again after an update of `libmimalloc-sys`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// What a block of mimalloc's plain calls is aligned to, at least, when it
/// holds this many bytes or more (`MI_MAX_ALIGN_SIZE`); a smaller block is
/// aligned to 8.
const PLAIN_ALIGNMENT: usize = 16;

/// mimalloc as the global allocator (see the module's doc).
pub struct MiMalloc;

/// True when mimalloc's plain call returns a block aligned to `align` for
/// `size` bytes: the blocks of its size classes are multiples of 16 bytes
/// (8 bytes for the smallest), laid out from a 16-aligned start.
#[inline]
fn plain_call_aligns(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGNMENT && align <= size
}

// SAFETY: every pointer returned comes from mimalloc, aligned to
// `layout.align()` (the plain calls only where they guarantee it), and
// `mi_free`/`mi_realloc` take any pointer mimalloc returned, aligned or not.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let block = if plain_call_aligns(layout.align(), layout.size()) {
            mi::mi_malloc(layout.size())
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align())
        };
        block.cast()
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let block = if plain_call_aligns(layout.align(), layout.size()) {
            mi::mi_zalloc(layout.size())
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align())
        };
        block.cast()
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let block = if plain_call_aligns(layout.align(), new_size) {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size)
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align())
        };
        block.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Around every line mimalloc draws: blocks of 8 and 16 bytes, the
    /// 1 KiB of its aligned fast path, small pages (10 KiB), the largest
    /// size class (512 KiB) and the huge blocks past it.
    const SIZES: &[usize] = &[
        1, 2, 3, 7, 8, 9, 12, 15, 16, 17, 24, 31, 32, 40, 48, 56, 64, 72, 80, 96, 100, 112, 128,
        160, 200, 256, 320, 500, 1000, 1024, 1025, 1500, 2048, 3000, 4096, 5000, 10_000, 10_240,
        10_241, 65_536, 100_000, 524_288, 524_289, 1_048_576, 5_242_880,
    ];
    /// Past 64 KiB, mimalloc serves an alignment from a page of its own.
    const ALIGNMENTS: &[usize] = &[1, 2, 4, 8, 16, 32, 64, 128, 4096, 65_536, 131_072];

    fn layouts() -> impl Iterator<Item = Layout> {
        SIZES.iter().flat_map(|&size| {
            ALIGNMENTS
                .iter()
                .map(move |&align| Layout::from_size_align(size, align).unwrap())
        })
    }

    fn assert_aligned(ptr: *mut u8, layout: Layout, what: &str) {
        assert!(!ptr.is_null(), "{what} of {layout:?} failed");
        assert_eq!(
            ptr as usize % layout.align(),
            0,
            "{what} of {layout:?} is misaligned: {ptr:p}"
        );
    }

    /// Fills a block with a pattern of its 4 KiB chunks (memset, so a
    /// megabyte costs little in a debug build).
    unsafe fn fill(ptr: *mut u8, size: usize, seed: u8) {
        for start in (0..size).step_by(4096) {
            let len = 4096.min(size - start);
            std::ptr::write_bytes(ptr.add(start), seed.wrapping_add((start / 4096) as u8), len);
        }
    }

    /// The first and last byte of each 4 KiB chunk of the first `size`
    /// bytes hold the pattern [`fill`] wrote.
    unsafe fn assert_filled(ptr: *mut u8, size: usize, seed: u8, what: &str) {
        for start in (0..size).step_by(4096) {
            let expected = seed.wrapping_add((start / 4096) as u8);
            let last = start + 4096.min(size - start) - 1;
            assert_eq!(*ptr.add(start), expected, "{what}: byte {start} lost");
            assert_eq!(*ptr.add(last), expected, "{what}: byte {last} lost");
        }
    }

    /// Many blocks at once, so the size classes' pages fill and later blocks
    /// come from fresh pages and other offsets, not only the first.
    #[test]
    fn every_block_is_aligned_as_its_layout_asks_and_holds_its_bytes() {
        for layout in layouts() {
            let count = if layout.size() <= 4096 { 64 } else { 2 };
            let blocks: Vec<*mut u8> = (0..count)
                .map(|i| unsafe {
                    let ptr = MiMalloc.alloc(layout);
                    assert_aligned(ptr, layout, "alloc");
                    std::ptr::write_bytes(ptr, i as u8, layout.size());
                    ptr
                })
                .collect();
            for (i, &ptr) in blocks.iter().enumerate() {
                let bytes = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
                assert!(bytes.iter().all(|&b| b == i as u8), "{layout:?} overlapped");
                unsafe { MiMalloc.dealloc(ptr, layout) };
            }
        }
    }

    #[test]
    fn a_zeroed_block_is_aligned_and_zero() {
        for layout in layouts() {
            unsafe {
                // Dirty a block of the same class first, so a reused one shows.
                let dirty = MiMalloc.alloc(layout);
                std::ptr::write_bytes(dirty, 0xAB, layout.size());
                MiMalloc.dealloc(dirty, layout);

                let ptr = MiMalloc.alloc_zeroed(layout);
                assert_aligned(ptr, layout, "alloc_zeroed");
                let bytes = std::slice::from_raw_parts(ptr, layout.size());
                assert!(bytes.iter().all(|&b| b == 0), "{layout:?} not zeroed");
                MiMalloc.dealloc(ptr, layout);
            }
        }
    }

    /// Growing and shrinking, across the line between the plain and the
    /// aligned calls in both directions, in place or moved, keeps the
    /// alignment and the bytes.
    #[test]
    fn a_reallocated_block_keeps_its_alignment_and_its_bytes() {
        for layout in layouts().filter(|layout| layout.size() <= 1_048_576) {
            for &new_size in SIZES.iter().filter(|&&size| size <= 1_048_576) {
                unsafe {
                    let ptr = MiMalloc.alloc(layout);
                    assert_aligned(ptr, layout, "alloc");
                    fill(ptr, layout.size(), 7);
                    let moved = MiMalloc.realloc(ptr, layout, new_size);
                    let new_layout = Layout::from_size_align(new_size, layout.align()).unwrap();
                    assert_aligned(moved, new_layout, "realloc");
                    let what = format!("{layout:?} to {new_size}");
                    assert_filled(moved, layout.size().min(new_size), 7, &what);
                    MiMalloc.dealloc(moved, new_layout);
                }
            }
        }
    }

    /// A `Vec`'s life: grown a size at a time to 1 MiB, then shrunk back.
    #[test]
    fn a_block_grown_step_by_step_and_shrunk_back_keeps_its_bytes() {
        for align in [8, 16, 64] {
            unsafe {
                let mut layout = Layout::from_size_align(1, align).unwrap();
                let mut ptr = MiMalloc.alloc(layout);
                fill(ptr, 1, 3);
                let mut size = 1;
                let steps = std::iter::from_fn(|| {
                    size = (size * 3 / 2 + 1).min(1_048_576);
                    Some(size)
                })
                .take_while(|&size| size < 1_048_576)
                .collect::<Vec<_>>();
                for &new_size in steps.iter().chain(steps.iter().rev().skip(1)) {
                    let kept = layout.size().min(new_size);
                    ptr = MiMalloc.realloc(ptr, layout, new_size);
                    layout = Layout::from_size_align(new_size, align).unwrap();
                    assert_aligned(ptr, layout, "realloc");
                    assert_filled(ptr, kept, 3, &format!("to {new_size}"));
                    fill(ptr, new_size, 3);
                }
                MiMalloc.dealloc(ptr, layout);
            }
        }
    }

    /// Blocks made on one thread are reallocated (both calls) and freed on
    /// another, as a request's buffers are when tokio moves its task.
    #[test]
    fn a_block_made_on_one_thread_is_reallocated_and_freed_on_another() {
        let blocks: Vec<(usize, Layout)> = layouts()
            .filter(|layout| layout.size() <= 65_536)
            .map(|layout| unsafe {
                let ptr = MiMalloc.alloc(layout);
                fill(ptr, layout.size(), 11);
                (ptr as usize, layout)
            })
            .collect();
        std::thread::spawn(move || {
            for (address, layout) in blocks {
                unsafe {
                    let new_size = layout.size() * 2;
                    let moved = MiMalloc.realloc(address as *mut u8, layout, new_size);
                    let new_layout = Layout::from_size_align(new_size, layout.align()).unwrap();
                    assert_aligned(moved, new_layout, "realloc on another thread");
                    assert_filled(moved, layout.size(), 11, &format!("{layout:?}"));
                    MiMalloc.dealloc(moved, new_layout);
                }
            }
        })
        .join()
        .unwrap();
    }
}
