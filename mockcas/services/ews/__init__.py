"""EWS of the mock CAS: SOAP 1.1 at `POST /EWS/Exchange.asmx`, answering as Exchange 2010 SP1.

Why the lab needs it: in Exchange 2010 a pull subscription and its event queue live on the CAS that took
the Subscribe. A GetEvents that the balancer sends to another CAS is answered `ErrorSubscriptionNotFound`
(HTTP 200 with ResponseClass="Error", as Exchange does) - the hard break this lab looks for. Microsoft's
advice is to persist EWS on the `exchangecookie` the server sets, or on a balancer cookie.

What is served:
- `Subscribe` (pull only) -> SubscriptionId + Watermark, kept in this service (so on this CAS alone);
  idle expiry after the subscription's Timeout (1-1440 minutes, time-scaled), reset by each GetEvents;
- `GetEvents` -> the events after the client's watermark (a NewMailEvent is made up every
  NEW_MAIL_EVERY_S so a poller sees traffic) or a StatusEvent; `Unsubscribe`;
- stateless `GetFolder`, `FindItem`, `GetUserAvailabilityRequest` with plausible, deterministic answers;
- `GET` gets the service's page, as browsing to Exchange.asmx does.
Malformed XML, a DTD, a wrong envelope or a schema violation -> HTTP 500 with a `soap:Fault`
(`ErrorSchemaValidation`); an operation not served here -> fault `ErrorInvalidRequest`.

The modules, one concern each:
  service.py        the service: the HTTP request, the operations, the ledger notes
  subscriptions.py  the state that needs affinity: pull subscriptions, their ids, event queues, expiry
  mailbox.py        the made-up mailbox every CAS shows alike: folders, items, free/busy, their ids
  soap.py           the SOAP layer: reading the envelope, faults, response envelopes and messages
"""

from mockcas.services.ews import service  # noqa: F401 - importing the service registers it
