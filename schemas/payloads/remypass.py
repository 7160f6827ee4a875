"""RemyPass POST /event-tickets/create-from-booking body (providers/source/remypass-*.txt)."""

from schemas.payloads._common import Email, IsoDateTime, NonEmpty, PayloadModel


class RemyPassCustomer(PayloadModel):
    name: NonEmpty
    email: Email


class RemyPassBooking(PayloadModel):
    bookingId: NonEmpty  # unique per account at RemyPass: its own duplicate guard
    film: NonEmpty
    startTime: IsoDateTime
    seat: NonEmpty
    row: NonEmpty
    screen: NonEmpty
    customer: RemyPassCustomer
    sendEmail: bool = False
