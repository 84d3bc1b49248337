//! `picket.v1.AlertService`: the resumable alert stream and acknowledgements.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{ApiState, SubscriberGuard};
use crate::delivery::proto::{self, pb};
use crate::delivery::spool::{SpoolError, SpoolItem, valid_sink_name};
use crate::delivery::telemetry::METRICS;

/// Items read from the spool per wake-up. Small on purpose: with
/// [`STREAM_QUEUE`] this bounds what a stream that stops reading holds in
/// memory (a few dozen alerts, plus the HTTP/2 flow-control window); the rest
/// stays on disk and the stream lags on the spool.
const READ_BATCH: usize = 16;

/// Encoded messages queued per stream ahead of the transport.
const STREAM_QUEUE: usize = 4;

pub struct AlertApi {
    pub state: Arc<ApiState>,
}

type AlertStream = Pin<Box<dyn Stream<Item = Result<pb::StreamAlertsResponse, Status>> + Send>>;

fn gap_msg(g: crate::delivery::spool::Gap) -> pb::StreamAlertsResponse {
    pb::StreamAlertsResponse {
        item: Some(pb::stream_alerts_response::Item::Gap(pb::Gap {
            from_seq: g.from_seq,
            to_seq: g.to_seq,
            count: g.count,
        })),
    }
}

#[tonic::async_trait]
impl pb::alert_service_server::AlertService for AlertApi {
    type StreamAlertsStream = AlertStream;

    async fn stream_alerts(
        &self,
        req: Request<pb::StreamAlertsRequest>,
    ) -> Result<Response<AlertStream>, Status> {
        let peer = super::identity::peer_identity(&req);
        let principal = super::identity::principal(&req);
        let slot = self.state.stream_slot()?;
        let r = req.into_inner();
        let filter = proto::alert_filter_from_pb(r.filter.as_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let spool = self.state.spool.clone();
        let sub = r.subscriber;
        if !sub.is_empty() && !valid_sink_name(&sub) {
            return Err(Status::invalid_argument(
                "subscriber: 1-64 characters of [A-Za-z0-9._-]",
            ));
        }
        // The cursor lives in the caller's own namespace.
        let cursor = if sub.is_empty() {
            String::new()
        } else {
            super::identity::subscriber_cursor(&principal, &sub)
        };
        let start = match (r.from_seq, sub.is_empty()) {
            (Some(s), _) => s.max(1),
            (None, false) => match spool.cursor(&cursor) {
                Some(c) => c + 1,
                None => {
                    // First time: register the subscriber at the current end so
                    // a disconnect before its first ack loses nothing after now.
                    let last = spool.last_seq();
                    spool
                        .ack(&cursor, last)
                        .map_err(|e| Status::internal(e.to_string()))?;
                    last + 1
                }
            },
            (None, true) => spool.last_seq() + 1,
        };
        tracing::info!(peer = %peer, subscriber = %sub, from_seq = start, filter = ?filter, "alert stream opened");
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut shutdown = self.state.shutdown.clone();
        let mut unspooled = self.state.unspooled.subscribe();
        tokio::spawn(async move {
            let _guard = SubscriberGuard::new(slot);
            let mut reader = spool.reader(start);
            'outer: loop {
                let items = tokio::select! {
                    r = reader.next_batch(READ_BATCH) => r,
                    u = unspooled.recv() => match u {
                        // Degraded delivery (the spool refused it): seq 0.
                        Ok(a) if filter.matches(&a) => Ok(vec![SpoolItem::Alert(Box::new((*a).clone()))]),
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = tx.closed() => break,
                    _ = shutdown.changed() => break,
                };
                let items = match items {
                    Ok(i) => i,
                    Err(SpoolError::Closed) => break,
                    Err(e) => {
                        tracing::warn!(peer = %peer, error = %e, "alert stream: spool read failed");
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        break;
                    }
                };
                for it in items {
                    let msg = match it {
                        SpoolItem::Alert(a) if !filter.matches(&a) => continue,
                        SpoolItem::Alert(a) => pb::StreamAlertsResponse {
                            item: Some(pb::stream_alerts_response::Item::Alert(
                                proto::alert_to_pb(&a),
                            )),
                        },
                        SpoolItem::Gap(g) => {
                            METRICS
                                .sink_gaps
                                .get_or_create(&crate::delivery::telemetry::sink("grpc"))
                                .inc_by(g.count);
                            gap_msg(g)
                        }
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        break 'outer;
                    }
                }
            }
            tracing::info!(peer = %peer, subscriber = %sub, at_seq = reader.position(), "alert stream closed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn ack(&self, req: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        let principal = super::identity::principal(&req);
        let r = req.into_inner();
        if !valid_sink_name(&r.subscriber) {
            return Err(Status::invalid_argument(
                "subscriber: 1-64 characters of [A-Za-z0-9._-]",
            ));
        }
        let acked_seq = self
            .state
            .spool
            .ack(
                &super::identity::subscriber_cursor(&principal, &r.subscriber),
                r.seq,
            )
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::AckResponse { acked_seq }))
    }
}
