//! The protobuf codec of the generated gRPC service and client (build.rs
//! names it): prost's, with a 1 KiB encode buffer instead of tonic's
//! 8 KiB default. Every response of this API is one small message (a token
//! is ~200-400 bytes, an agent session ~1.2 KiB; the buffer grows when a
//! message needs it), and a `WatchToken` stream keeps its encode buffer for
//! its whole life: at 8 KiB that buffer alone was more than the memory
//! budget of an idle watch (BENCHMARKS.md, "WatchToken").

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// Bytes reserved to encode a response (and a client's request).
pub const ENCODE_BUFFER: usize = 1024;
/// tonic's default: encoded bytes after which a stream yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with an [`ENCODE_BUFFER`]-byte encode buffer.
#[derive(Debug)]
pub struct TokenCodec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for TokenCodec<T, U> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T, U> Codec for TokenCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::default().decoder()
    }
}
