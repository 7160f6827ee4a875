module example.com/ticketrelay-booking

go 1.19
