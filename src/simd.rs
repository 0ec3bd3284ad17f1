//! Hot loops compiled for the baseline CPU and for AVX2, chosen at run time ([`simd_dispatch`]).
//! A bottom module: the profile and the model kernels both use it.

/// Compiles a function twice, for the baseline x86-64 that release builds target and for
/// AVX2 (four f64 to a register where SSE2 has two), and calls the one the CPU can run. Both
/// compile the same body: no fused multiply-add or reordering, so the results are the same
/// bits either way. For the hot loops only; everything they call must be `#[inline(always)]`
/// to be compiled for AVX2 too.
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                    && !$crate::simd::portable_only()
                {
                    // SAFETY: the CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;

/// Whether [`simd_dispatch`] must call the baseline code: for the tests that compare the two.
#[inline]
pub(crate) fn portable_only() -> bool {
    #[cfg(test)]
    return PORTABLE.get();
    #[cfg(not(test))]
    false
}

#[cfg(test)]
thread_local! {
    static PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` on this thread with the baseline code only.
#[cfg(test)]
pub(crate) fn portable<R>(f: impl FnOnce() -> R) -> R {
    PORTABLE.set(true);
    let r = f();
    PORTABLE.set(false);
    r
}
