//! Packet access shared by the TC and XDP programs, so header parsing and NAT are written
//! once. TC goes through the skb helpers, which also keep CHECKSUM_PARTIAL skbs right; XDP
//! reads and writes the frame directly and updates checksums by hand (RFC 1624), which
//! assumes fully checksummed frames as a NIC delivers them.
use aya_ebpf::programs::{TcContext, XdpContext};

/// `l4_csum` flag: the changed field is in the transport checksum's pseudo-header.
pub const CSUM_PSEUDO_HDR: u64 = 16;
/// `l4_csum` flag: a zero UDP checksum means "none" and must stay zero.
pub const CSUM_MANGLED_0: u64 = 32;

pub trait Frame {
    /// The frame's full length.
    fn len(&self) -> usize;
    fn load<T: Copy>(&self, off: usize) -> Option<T>;
    /// `load` for the frame's own headers, at an offset the compiler knows: TC reads them in
    /// place when they are in the skb's linear part (they are, as a veth delivers them),
    /// saving a helper call per header on every packet.
    #[inline(always)]
    fn load_head<T: Copy>(&self, off: usize) -> Option<T> {
        self.load(off)
    }
    fn store<T: Copy>(&self, off: usize, value: &T) -> Option<()>;
    /// Updates the IP header checksum at `csum_off` for a `size`-byte field going from `from`
    /// to `to` (raw, as in the packet).
    fn l3_csum(&self, csum_off: usize, from: u32, to: u32, size: u64) -> Option<()>;
    /// The same for a transport checksum; `flags` holds the size and the `CSUM_*` flags.
    fn l4_csum(&self, csum_off: usize, from: u32, to: u32, flags: u64) -> Option<()>;
}

impl Frame for TcContext {
    #[inline(always)]
    fn len(&self) -> usize {
        TcContext::len(self) as usize
    }
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        TcContext::load::<T>(self, off).ok()
    }
    #[inline(always)]
    fn load_head<T: Copy>(&self, off: usize) -> Option<T> {
        let start = self.data() + off;
        if start + core::mem::size_of::<T>() > self.data_end() {
            return Frame::load(self, off);
        }
        // SAFETY: the value lies inside the linear data, as checked just above.
        Some(unsafe { (start as *const T).read_unaligned() })
    }
    #[inline(always)]
    fn store<T: Copy>(&self, off: usize, value: &T) -> Option<()> {
        TcContext::store(self, off, value, 0).ok()
    }
    #[inline(always)]
    fn l3_csum(&self, csum_off: usize, from: u32, to: u32, size: u64) -> Option<()> {
        self.l3_csum_replace(csum_off, from.into(), to.into(), size).ok()
    }
    #[inline(always)]
    fn l4_csum(&self, csum_off: usize, from: u32, to: u32, flags: u64) -> Option<()> {
        self.l4_csum_replace(csum_off, from.into(), to.into(), flags).ok()
    }
}

impl Frame for XdpContext {
    #[inline(always)]
    fn len(&self) -> usize {
        self.data_end() - self.data()
    }
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        let p = xdp_ptr::<T>(self, off)?;
        // SAFETY: `xdp_ptr` checked that the value lies inside the frame.
        Some(unsafe { p.read_unaligned() })
    }
    #[inline(always)]
    fn store<T: Copy>(&self, off: usize, value: &T) -> Option<()> {
        let p = xdp_ptr::<T>(self, off)?;
        // SAFETY: as above.
        unsafe { p.write_unaligned(*value) };
        Some(())
    }
    #[inline(always)]
    fn l3_csum(&self, csum_off: usize, from: u32, to: u32, size: u64) -> Option<()> {
        let sum = self.load::<u16>(csum_off)?;
        self.store(csum_off, &csum_replace(sum, from, to, size))
    }
    #[inline(always)]
    fn l4_csum(&self, csum_off: usize, from: u32, to: u32, flags: u64) -> Option<()> {
        let sum = self.load::<u16>(csum_off)?;
        if flags & CSUM_MANGLED_0 != 0 && sum == 0 {
            return Some(());
        }
        let mut new = csum_replace(sum, from, to, flags & 0xf);
        if flags & CSUM_MANGLED_0 != 0 && new == 0 {
            new = 0xffff;
        }
        self.store(csum_off, &new)
    }
}

/// A bounds-checked pointer into an XDP frame, as the verifier requires.
#[inline(always)]
fn xdp_ptr<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + off + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *mut T)
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), over the 16-bit words of the changed field.
/// Ones' complement sums are byte-order independent, so raw packet values work as they are.
#[inline(always)]
fn csum_replace(sum: u16, from: u32, to: u32, size: u64) -> u16 {
    let mut acc = u32::from(!sum);
    if size == 4 {
        acc += u32::from(!(from as u16)) + u32::from(!((from >> 16) as u16));
        acc += (to & 0xffff) + (to >> 16);
    } else {
        acc += u32::from(!(from as u16)) + (to & 0xffff);
    }
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}
