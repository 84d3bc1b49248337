//! `picket.v1.EventService`: the live (not spooled) event stream.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{ApiState, SubscriberGuard};
use crate::delivery::proto::{self, pb};
use crate::delivery::telemetry::METRICS;

pub struct EventApi {
    pub state: Arc<ApiState>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::StreamEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::event_service_server::EventService for EventApi {
    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        req: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let peer = super::identity::peer_identity(&req);
        let filter = proto::event_filter_from_pb(req.get_ref().filter.as_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(peer = %peer, filter = ?filter, "event stream opened");
        let slot = self.state.stream_slot()?;
        let mut events = self.state.events.subscribe();
        let mut shutdown = self.state.shutdown.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let _guard = SubscriberGuard::new(slot);
            loop {
                let msg = tokio::select! {
                    r = events.recv() => match r {
                        Ok(ev) if filter.matches(&ev) => pb::stream_events_response::Item::Event(proto::event_to_pb(&ev)),
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            METRICS.events_dropped.inc_by(n);
                            tracing::warn!(peer = %peer, dropped = n, "event stream subscriber fell behind");
                            pb::stream_events_response::Item::Dropped(pb::EventsDropped { count: n })
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = tx.closed() => break,
                    _ = shutdown.changed() => break,
                };
                if tx
                    .send(Ok(pb::StreamEventsResponse { item: Some(msg) }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            tracing::info!(peer = %peer, "event stream closed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
