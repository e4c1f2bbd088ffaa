//! The identity of a network namespace, as a row records it.
/// Who a network namespace is, as recorded with an endpoint. (device, inode) names it while
/// it lives, but the kernel hands a freed inode number to the next namespace at once; the
/// namespace cookie is never reused within a boot, and the boot id tells boots apart. Rows
/// from before cookies were recorded have cookie 0 and boot "" and match by (device, inode).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NsIdentity {
    pub dev: u64,
    pub ino: u64,
    pub cookie: u64,
    pub boot: String,
}
