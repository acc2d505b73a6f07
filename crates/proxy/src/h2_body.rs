//! Moving an HTTP/2 body: data under flow control both ways, then trailers. Shared by every
//! path that has an HTTP/2 stream on either side (client or upstream).

use std::future::poll_fn;

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http::HeaderMap;

/// Why a body stopped part-way.
#[derive(Debug)]
pub(crate) enum RelayError {
    /// The side it was read from failed (reset, connection lost).
    Read(h2::Error),
    /// The side it was written to failed.
    Write(h2::Error),
}

/// The next piece of `body`: Some(bytes) of data, already given back to the peer's flow-control
/// window (the bytes are ours once read; whoever writes them on waits for their own peer's
/// window), or None at the end of the data (trailers may follow: `trailers`).
pub(crate) async fn recv_data(body: &mut RecvStream) -> Option<Result<Bytes, h2::Error>> {
    let data = poll_fn(|cx| body.poll_data(cx)).await?;
    Some(data.and_then(|bytes| {
        body.flow_control().release_capacity(bytes.len())?;
        Ok(bytes)
    }))
}

/// The trailers after the last data frame, if the peer sent any.
pub(crate) async fn trailers(body: &mut RecvStream) -> Result<Option<HeaderMap>, h2::Error> {
    poll_fn(|cx| body.poll_trailers(cx)).await
}

/// Sends all of `data` on `stream` as the peer's flow-control window allows, ending the stream
/// with the last byte when `end` is set.
pub(crate) async fn send_data(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), h2::Error> {
    if data.is_empty() {
        return stream.send_data(data, end);
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(granted) => granted?,
            // The stream was reset or closed: what it says is in send_data's error.
            None => return stream.send_data(Bytes::new(), end),
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        stream.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}

/// Copies the rest of `from` (data, then trailers or the end) onto `to`, ending it.
pub(crate) async fn relay(from: &mut RecvStream, to: &mut SendStream<Bytes>) -> Result<(), RelayError> {
    if from.is_end_stream() {
        return to.send_data(Bytes::new(), true).map_err(RelayError::Write);
    }
    while let Some(data) = recv_data(from).await {
        let data = data.map_err(RelayError::Read)?;
        let end = from.is_end_stream();
        send_data(to, data, end).await.map_err(RelayError::Write)?;
        if end {
            return Ok(());
        }
    }
    match trailers(from).await.map_err(RelayError::Read)? {
        Some(trailers) => to.send_trailers(trailers).map_err(RelayError::Write),
        None => to.send_data(Bytes::new(), true).map_err(RelayError::Write),
    }
}
